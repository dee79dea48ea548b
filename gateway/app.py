"""The gateway's aiohttp application: the client API (data plane), the operations routes,
the admin API and dashboard (control plane), and the one middleware every request passes."""

from __future__ import annotations

import logging
import os
import time

from aiohttp import web
from prometheus_client import generate_latest

from geogate.gateway.access.callers import Caller
from geogate.gateway.control.admin import ADMIN, Admin
from geogate.gateway.control.routes import add_admin_routes
from geogate.gateway.dataplane.handlers import add_routes
from geogate.gateway.dataplane.openapi import OPENAPI
from geogate.gateway.dataplane.pipeline import CALLER, DATA_PLANE, DataPlane, Route
from geogate.shared.http import Handler, guarded, json_response, request_id
from geogate.shared.schemas import encode

__all__ = ["create_app"]

log = logging.getLogger("geogate.gateway.http")
access = logging.getLogger("geogate.gateway.access")

ACCESS_LOG = web.AppKey("access_log", bool)


def create_app(plane: DataPlane, admin: Admin | None = None, *, scoring: bool = True,
               access_log: bool = True) -> web.Application:
    """The client API and operations routes (``scoring``), and the admin API when given."""
    app = web.Application(middlewares=[_middleware], client_max_size=plane.requests.max_body_bytes + 1)
    app[DATA_PLANE] = plane
    app[ACCESS_LOG] = access_log
    app.router.add_get("/healthz", healthz)
    if scoring:
        add_routes(app)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/openapi.json", openapi)
    if admin is not None:
        app[ADMIN] = admin
        add_admin_routes(app)

        async def end_streams(app: web.Application) -> None:  # before the drain waits for handlers
            admin.closing.set()

        app.on_shutdown.append(end_streams)
    return app


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, the JSON error shape, metrics and the access log, in one pass."""
    started = time.perf_counter()
    rid = request_id(request)
    response = await guarded(handler, request, rid, log)
    response.headers["X-Request-ID"] = rid
    gw = request.app[DATA_PLANE]
    route: Route | None = request.get("route")
    resource = request.match_info.route.resource
    name = resource.canonical if resource is not None else "unmatched"
    elapsed = time.perf_counter() - started
    served = route.served if route else ""
    gw.metrics.requests.inc((name, str(response.status), served,
                             route.color if route else ""))
    gw.metrics.latency.observe((name,), elapsed)
    if route is not None:
        _observe(gw, route, response.status, elapsed * 1000)
    caller: Caller | None = request.get(CALLER)
    if caller is not None:
        _observe_client(gw, caller.name, name, route, response.status, elapsed)
    if request.app[ACCESS_LOG] and name not in ("/metrics", "/healthz", "/readyz"):
        access.info("%s %s %d", request.method, request.path, response.status, extra={
            "request_id": rid, "route": name, "status": response.status, "ms": round(elapsed * 1000, 2),
            "client": caller.name if caller else None, "via": caller.via if caller else None,
            "peer": request.remote, "home": route.geo.region if route else None, "served": served or None,
            "color": route.color if route else None, "node": (route.node or None) if route else None,
            "cache": route.cache if route else None, "attempts": route.attempts if route else None,
        })
    return response


def _observe(gw: DataPlane, route: Route, status: int, ms: float) -> None:
    ok, hit, home = status < 500, route.cache == "hit", route.geo.region
    gw.stats("all").record(ms, ok=ok, hit=hit)
    gw.stats(f"color:{route.color}").record(ms, ok=ok, hit=hit)
    gw.stats(f"region:{route.served}").record(ms, ok=ok, hit=hit)
    gw.stats(f"home:{home}").record(ms, ok=ok, hit=hit)
    for observe in gw.call_observers:
        observe(home, route.served, ok, ms)


_STATUS_CLASS = {n: f"{n}xx" for n in range(1, 6)}


def _observe_client(gw: DataPlane, client: str, name: str, route: Route | None, status: int, elapsed: float) -> None:
    """Per calling service: calls by status class (429 on its own), items, latency, recent stats."""
    m = gw.metrics
    m.client_requests.inc((client, name, "429" if status == 429 else _STATUS_CLASS[status // 100]))
    m.client_latency.observe((client,), elapsed)
    if route is not None and status == 200:
        m.client_items.inc((client, "hit"), route.hits)
        m.client_items.inc((client, "miss"), route.items - route.hits)
    gw.stats(f"client:{client}").record(elapsed * 1000, ok=status < 400, hit=route is not None and route.cache == "hit")


async def healthz(request: web.Request) -> web.Response:
    return json_response(b'{"status":"live"}')


async def readyz(request: web.Request) -> web.Response:
    """Ready when the registry snapshot is loaded and some node serves its active color."""
    gw = request.app[DATA_PLANE]
    snapshot = gw.watcher.snapshot
    version = snapshot.active_version()
    serving = gw.balancer.serving_regions(snapshot.active_color, version) if version else []
    ready = snapshot.epoch > 0 and bool(serving)
    body = {"status": "ready" if ready else "not_ready", "pid": os.getpid(), "epoch": snapshot.epoch, "active_color": snapshot.active_color,
            "model_version": version, "regions_serving": serving, "registry_age_s": round(gw.watcher.age_s, 3)}
    return json_response(encode(body), 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[DATA_PLANE]
    gw.metrics.registry_epoch.set(gw.watcher.snapshot.epoch)
    age = gw.watcher.age_s
    gw.metrics.registry_age.set(age if age != float("inf") else -1)
    snapshot = gw.watcher.snapshot
    skew: dict[tuple[str, ...], int] = {}
    for node in gw.balancer.nodes:
        info = snapshot.colors.get(node.spec.color)
        key = (node.spec.region, node.spec.color)
        skew[key] = skew.get(key, 0) + bool(info and node.model_version and node.model_version != info.model_version)
    gw.metrics.version_skew.publish(skew)
    return web.Response(body=generate_latest(gw.metrics.registry),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi(request: web.Request) -> web.Response:
    return json_response(OPENAPI)
