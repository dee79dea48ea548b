"""The admin API under ``/admin/v1/``: status, color registration, verified blue/green
switch with a watch window, rollback, canary, region drain/fail/restore, drills, audit,
and a dry run of routing.

Every change is a POST, needs a role (``gateway.auth``), a ``reason``, and goes through
the registry's epoch CAS, which writes the audit entry (who, when, why, before, after).
A switch or rollback answers only once every live gateway has applied the new epoch (they
say so in their heartbeats), so that after the answer no gateway serves the old version.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import aiohttp
import msgspec
from aiohttp import web

from geogate.gateway.config import AdminSettings
from geogate.gateway.control.auth import Principal, TokenBook
from geogate.gateway.control.drills import DrillReport, Drills
from geogate.gateway.control.openapi import Route
from geogate.gateway.control.prechecks import GoldenSet, SwitchReport, precheck
from geogate.gateway.control.roster import Roster
from geogate.gateway.control.view import GatewayView
from geogate.gateway.control.watch import SwitchWatch
from geogate.shared.errors import Conflict, Forbidden, InvalidRequest, NotFound, PrecheckFailed, StoreUnavailable
from geogate.shared.heartbeats import GatewayHeartbeat
from geogate.shared.http import Handler, json_response, read_body, request_id
from geogate.shared.registry import RegistryRecord
from geogate.shared.schemas import decode, encode

__all__ = ["ADMIN", "ROUTES", "Admin"]

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
COLORS = ("blue", "green")  # docs/design.md: every region runs nodes of both, one active
Color = Literal["blue", "green"]


class SwitchBody(msgspec.Struct, forbid_unknown_fields=True):
    to: Color
    reason: Reason
    dry_run: bool = False
    expected_epoch: int | None = None


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason
    expected_epoch: int | None = None


class ColorBody(msgspec.Struct, forbid_unknown_fields=True):
    model_version: Annotated[str, msgspec.Meta(min_length=3, max_length=200)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{64})?$")]
    reason: Reason
    expected_epoch: int | None = None


class CanaryBody(msgspec.Struct, forbid_unknown_fields=True):
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)]
    reason: Reason
    expected_epoch: int | None = None


class DrillBody(msgspec.Struct, forbid_unknown_fields=True):
    region: str
    reason: Reason
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    mode: str = "fail"
    wait: bool = False


@dataclass
class Admin:
    view: GatewayView
    settings: AdminSettings
    tokens: TokenBook
    gateways: Roster  # the live gateways a change waits for
    session: aiohttp.ClientSession  # for the golden set (the probes' session)
    golden: GoldenSet
    watch: SwitchWatch
    drills: Drills
    publish_now: Callable[[], None]  # this gateway's heartbeat, at once (after it applied an epoch)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one switch at a time per gateway
    subscribers: set[asyncio.Event] = field(default_factory=set)  # event streams, woken by registry changes
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set on shutdown: streams end

    def changed(self) -> None:
        for event in self.subscribers:
            event.set()


ADMIN = web.AppKey("admin", Admin)


def _ctx(request: web.Request, role: str) -> tuple[Admin, Principal]:
    admin = request.app[ADMIN]
    if admin.settings.admin_tls_only and not request.secure:
        raise Forbidden("the admin API is served over TLS only here")
    return admin, admin.tokens.require(request, role)


def _json(obj: Any, status: int = 200) -> web.Response:
    return json_response(encode(obj), status)


async def _body(request: web.Request, kind: type[Any]) -> Any:
    return decode(await read_body(request, 64 * 1024), kind)


# -- reads ---------------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    admin, _ = _ctx(request, "viewer")
    return _json(await _status(admin))


async def _status(admin: Admin) -> dict[str, Any]:
    view = admin.view
    snapshot = view.watcher.snapshot
    now = time.monotonic()
    regions: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for node in sorted(view.nodes, key=lambda n: (n.spec.region, n.spec.color, n.url)):
        recent = node.recent.snapshot(60)
        regions.setdefault(node.spec.region, {}).setdefault(node.spec.color, []).append({
            "url": node.url, "healthy": node.available(now), "model_version": node.model_version,
            "checksum": node.checksum, "queue_depth": node.queue_depth, "outstanding": node.outstanding,
            "ewma_ms": round(node.ewma_ms, 2), "error_rate": recent.error_rate, "p99_ms": recent.p99_ms,
            "calls_60s": recent.count, "last_error": node.last_error or None,
            "ejected_s": round(max(0.0, node.ejected_until - now), 1),
        })
    try:
        gateways: list[GatewayHeartbeat] | None = (await admin.gateways.read())[0]
        store = "ok"
    except StoreUnavailable as exc:
        gateways, store = None, f"unreachable: {exc}"
    body = {
        "registry": snapshot, "registry_age_s": round(view.watcher.age_s, 3), "store": store,
        "gateway": {"region": view.region, "epoch": snapshot.epoch, "traffic_60s": view.stats.snapshot("all", 60)},
        "regions": {r: {"state": snapshot.region_state(r), "colors": regions.get(r, {})}
                    for r in sorted(set(regions) | set(snapshot.regions))},
        "gateways": gateways, "top_clients": _top_clients(gateways or []), "watch": admin.watch.last,
        "drill": admin.drills.active.report if admin.drills.active else None,
        "retention_s": admin.settings.retention_s,
    }
    return body


def _top_clients(gateways: list[GatewayHeartbeat], top: int = 10) -> dict[str, list[dict[str, Any]]]:
    """The busiest calling services per region over the last 10 s, summed over the region's
    gateways (from their heartbeats; each lists its own busiest ten)."""
    per: dict[str, dict[str, dict[str, Any]]] = {}
    for gateway in gateways:
        for series, snap in gateway.stats.items():
            if series.startswith("client:"):
                row = per.setdefault(gateway.region, {}).setdefault(
                    series[7:], {"client": series[7:], "calls": 0, "rps": 0.0, "errors": 0, "hits": 0, "p99_ms": 0.0})
                row["calls"] += snap["count"]
                row["rps"] = round(row["rps"] + snap["rps"], 2)
                row["errors"] += snap["errors"]
                row["hits"] += snap["hits"]
                row["p99_ms"] = max(row["p99_ms"], snap["p99_ms"])  # the worst gateway's
    return {region: sorted(rows.values(), key=lambda r: -r["calls"])[:top] for region, rows in sorted(per.items())}


async def whoami(request: web.Request) -> web.Response:
    admin, principal = _ctx(request, "viewer")
    return _json({"name": principal.name, "role": principal.role, "gateway_region": admin.view.region})


EVENT_PERIOD_S = 1.0


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for the dashboard: the status plus the newest audit entries,
    every second and at once after a registry change."""
    admin, _ = _ctx(request, "viewer")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    changed = asyncio.Event()
    admin.subscribers.add(changed)
    try:
        while not admin.closing.is_set():
            body = await _status(admin)
            try:
                body["audit"] = await admin.view.registry.audit(10)
            except StoreUnavailable:
                body["audit"] = None
            body["sent_at"] = time.time()
            await response.write(b"event: state\ndata: " + encode(body) + b"\n\n")
            changed.clear()
            waiters = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(admin.closing.wait())}
            try:
                await asyncio.wait(waiters, timeout=EVENT_PERIOD_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
    except ConnectionResetError:
        pass  # the page went away
    finally:
        admin.subscribers.discard(changed)
    return response


async def audit(request: web.Request) -> web.Response:
    admin, _ = _ctx(request, "viewer")
    try:
        count = int(request.query.get("count", "50"))
    except ValueError as exc:
        raise InvalidRequest("count must be a whole number") from exc
    if not 1 <= count <= 1000:
        raise InvalidRequest("count must be within 1..1000")
    return _json({"entries": await admin.view.registry.audit(count)})


async def route(request: web.Request) -> web.Response:
    """A dry run of routing for a client address: no call is made."""
    admin, _ = _ctx(request, "viewer")
    view = admin.view
    text = request.query.get("ip", "")
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise InvalidRequest(f"ip must be an IPv4 or IPv6 address, not {text[:64]!r}") from exc
    task = request.query.get("task", "similarity")
    if task not in ("similarity", "parse"):
        raise InvalidRequest("task must be similarity or parse")
    snapshot = view.watcher.snapshot
    country, home, how = view.locate(ip)
    color = snapshot.active_color
    version = snapshot.active_version() or ""
    plan = view.balancer.plan(home, snapshot, color, version)
    picked = plan.next_node()
    node = None if picked is None else {
        "url": picked.url, "region": picked.spec.region, "reason": plan.reason_for(picked.spec.region),
        "outstanding": picked.outstanding, "ewma_ms": round(picked.ewma_ms, 2)}
    return _json({"ip": str(ip), "task": task, "country": country, "home": home, "how": how, "color": color,
                  "version": version,
                  "order": plan.regions, "skipped": plan.skipped, "node": node,
                  "answer": "served" if node else "503: no region may serve this call"})


# -- changes -------------------------------------------------------------------------------


async def _changed(admin: Admin, record: RegistryRecord) -> dict[str, Any]:
    """Apply ``record`` here at once, then wait until every live gateway has applied it."""
    await admin.view.watcher.apply(record)
    admin.publish_now()
    deadline = time.monotonic() + admin.settings.switch_ack_timeout_s
    while True:
        live: list[GatewayHeartbeat] | None
        missing: list[GatewayHeartbeat] | None
        try:
            live, missing = await admin.gateways.read()
        except StoreUnavailable:
            live = missing = None  # the change is written; who has applied it cannot be read now
        behind = [g for g in live or [] if g.epoch < record.epoch and g.state == "serving"]
        unregistered = [g for g in missing or [] if g.state == "serving"]
        if (live is not None and not behind and not unregistered) or time.monotonic() > deadline:
            unknown = [] if live is not None else ["unknown: the store became unreachable before gateways confirmed"]
            return {"epoch": record.epoch, "gateways_applied": [f"{g.region} {g.url} pid {g.pid}" for g in live or []
                                                                 if g not in behind],
                    "gateways_not_confirmed": unknown + [f"{g.region} {g.url} pid {g.pid} (at epoch {g.epoch})"
                                                         for g in behind]
                    + [f"{g.region} {g.url} pid {g.pid} (alive, but its heartbeat is not back in the store)"
                       for g in unregistered]}
        await asyncio.sleep(0.02)


async def register_color(request: web.Request) -> web.Response:
    admin, who = _ctx(request, "admin")
    color = request.match_info["color"]
    if color not in COLORS:
        raise NotFound(f"no color {color[:40]!r}; colors are {', '.join(COLORS)}")
    body: ColorBody = await _body(request, ColorBody)
    record = await admin.view.registry.register_color(color, body.model_version, body.sha256, who=who.name,
                                                      why=body.reason, expected_epoch=body.expected_epoch)
    return _json({"registry": record, **await _changed(admin, record)})


async def switch(request: web.Request) -> web.Response:
    admin, who = _ctx(request, "operator")
    view = admin.view
    body: SwitchBody = await _body(request, SwitchBody)
    async with admin.lock:  # one switch at a time per gateway; across gateways the epoch CAS decides
        snapshot = view.watcher.snapshot
        if body.to not in snapshot.colors:
            raise InvalidRequest(f"color {body.to!r} is not registered (registered: {sorted(snapshot.colors)})")
        if body.to == snapshot.active_color:
            raise Conflict(f"{body.to} is already the active color (epoch {snapshot.epoch})", current=snapshot.epoch)
        expected = body.expected_epoch if body.expected_epoch is not None else snapshot.epoch
        report = await precheck(snapshot, body.to, view.nodes, admin.session, admin.settings, admin.golden,
                                prefer=view.region)
        if body.dry_run:
            return _json({"dry_run": True, "would_switch": report.ok, "report": report})
        if not report.ok:
            raise _precheck_failed(report, request_id(request))
        old = snapshot.active_color
        baseline = view.stats.snapshot(f"color:{old}", 59)
        record = await view.registry.switch(body.to, who=who.name, why=body.reason, expected_epoch=expected)
        applied = await _changed(admin, record)
        watch = admin.watch.start(old, body.to, record.epoch, baseline)
    return _json({"switched": True, "from": old, "to": body.to, "model_version": report.to_version,
                  **applied, "report": report, "watch": watch,
                  "previous_color_retained_s": admin.settings.retention_s})


def _precheck_failed(report: SwitchReport, rid: str) -> PrecheckFailed:
    message = "switch refused: " + "; ".join(report.problems)
    exc = PrecheckFailed(message)
    exc.body = encode({"error": {"code": exc.code, "message": message, "request_id": rid}, "report": report})
    return exc


async def rollback(request: web.Request) -> web.Response:
    admin, who = _ctx(request, "operator")
    body: ReasonBody = await _body(request, ReasonBody)
    async with admin.lock:
        snapshot = admin.view.watcher.snapshot
        back = snapshot.preview_color
        if back is None:
            raise Conflict("there is no previous color to roll back to", current=snapshot.epoch)
        admin.watch.stop()
        expected = body.expected_epoch if body.expected_epoch is not None else snapshot.epoch
        record = await admin.view.registry.switch(back, who=who.name, why=body.reason, expected_epoch=expected,
                                                  action="rollback")
        applied = await _changed(admin, record)
    return _json({"rolled_back": True, "from": snapshot.active_color, "to": back,
                  "model_version": record.active_version(), **applied})


async def canary(request: web.Request) -> web.Response:
    admin, who = _ctx(request, "operator")
    body: CanaryBody = await _body(request, CanaryBody)
    if body.percent > 0 and admin.view.watcher.snapshot.preview_color is None:
        raise Conflict("no preview color is registered to take canary traffic")
    record = await admin.view.registry.set_canary(body.percent, who=who.name, why=body.reason,
                                                  expected_epoch=body.expected_epoch)
    return _json({"canary_percent": record.canary_percent, "preview_color": record.preview_color,
                  **await _changed(admin, record)})


_REGION_STATES = {"drain": "drained", "fail": "failed", "restore": "active"}


def _known_region(view: GatewayView, region: str) -> None:
    known = view.known_regions()
    if region not in known:
        raise NotFound(f"unknown region {region!r} (known: {sorted(known)})")


async def region_action(request: web.Request) -> web.Response:
    admin, who = _ctx(request, "operator")
    region, action = request.match_info["region"], request.match_info["action"]
    if action not in _REGION_STATES:
        raise NotFound(f"no region action {action!r}; use drain, fail or restore")
    _known_region(admin.view, region)
    body: ReasonBody = await _body(request, ReasonBody)
    record = await admin.view.registry.set_region_state(region, _REGION_STATES[action], who=who.name,
                                                        why=body.reason, expected_epoch=body.expected_epoch)
    return _json({"region": region, "state": record.region_state(region), **await _changed(admin, record)})


async def start_drill(request: web.Request) -> web.Response:
    admin, who = _ctx(request, "operator")
    body: DrillBody = await _body(request, DrillBody)
    if body.mode not in ("fail", "drain", "kill"):
        raise InvalidRequest("mode must be fail, drain or kill")
    _known_region(admin.view, body.region)
    drill = admin.drills.start(body.region, body.duration_s, body.mode, who.name, body.reason)
    if body.wait:
        return _json(await admin.drills.wait(drill))
    return _json(drill.report, 202)


async def get_drill(request: web.Request) -> web.Response:
    admin, _ = _ctx(request, "viewer")
    found = admin.drills.get(request.match_info["id"])
    if found is None:
        raise NotFound(f"no drill {request.match_info['id']!r} on this gateway")
    return _json(found)


CHANGED = ("the change, with gateways_applied and gateways_not_confirmed: which live gateways serve by it")
ROUTES: list[tuple[Route, Handler]] = [
    (Route("GET", "/admin/v1/status", "viewer", "Registry, regions with their nodes, gateways, top clients, the "
           "switch watch and a running drill", returns="the status object the dashboard and `geogate admin "
           "status` show"), status),
    (Route("GET", "/admin/v1/whoami", "viewer", "Who the token belongs to", returns="name, role, gateway_region"),
     whoami),
    (Route("GET", "/admin/v1/events", "viewer", "Server-sent events: the status and the newest audit entries, "
           "every second and at once after a registry change", returns="text/event-stream of `state` events"),
     events),
    (Route("GET", "/admin/v1/audit", "viewer", "The newest registry changes", returns="entries: who, when, "
           "why, action, before and after"), audit),
    (Route("GET", "/admin/v1/route", "viewer", "Where a client address's call would go now (a dry run)",
           returns="country, home, region order, skipped regions and why, the node"), route),
    (Route("POST", "/admin/v1/colors/{color}", "admin", "Register the version and checksum a color's nodes serve",
           ColorBody, returns=CHANGED), register_color),
    (Route("POST", "/admin/v1/switch", "operator", "Switch to the other color, after pre-checks (every active "
           "region ready, the golden set agreeing), then watch the new color and roll back on a breach",
           SwitchBody, returns="the pre-check report, the watch and " + CHANGED), switch),
    (Route("POST", "/admin/v1/rollback", "operator", "Back to the previous color at once", ReasonBody,
           returns=CHANGED), rollback),
    (Route("POST", "/admin/v1/canary", "operator", "The share of calls the preview color serves", CanaryBody,
           returns=CHANGED), canary),
    (Route("POST", "/admin/v1/regions/{region}/{action}", "operator", "Drain, fail or restore a region "
           "(action: drain, fail or restore)", ReasonBody, returns=CHANGED), region_action),
    (Route("POST", "/admin/v1/drills", "operator", "Start a failover drill (with wait: answer when it is over)",
           DrillBody, DrillReport, status=202), start_drill),
    (Route("GET", "/admin/v1/drills/{id}", "viewer", "A drill's report", answer=DrillReport), get_drill),
]
