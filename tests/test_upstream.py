"""The fenced upstream call against small HTTP servers on loopback that behave like nodes
in the ways a real demo node cannot be made to (answer 500, hang, claim another version,
reject the request); the rest of the gateway's tests use real node processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from geogate.gateway.config import HealthSettings, UpstreamSettings
from geogate.gateway.dataplane.http1 import Http1Pool
from geogate.gateway.dataplane.upstream import NodeRejected, RetryBudget, Upstream
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.routing.balancer import Balancer, Plan
from geogate.gateway.routing.nodes import NodeSet
from geogate.gateway.routing.outliers import OutlierDetector
from geogate.gateway.routing.probes import HealthProbes
from geogate.gateway.routing.topology import NodeSpec, Topology
from geogate.shared.errors import DeadlineExceeded, Unavailable

V = "demo-v1-20261124"
OK_BODY = json.dumps({"results": [{"score": 0.9, "label": "exact_match"}], "model_version": V, "color": "blue",
                      "region": "x"}).encode()


def behaving(kind: str) -> web.Application:
    calls: list[int] = []
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(1)
        seen.append(dict(request.headers))
        if kind == "slow":
            await asyncio.sleep(0.3)
        if kind == "hang":
            await asyncio.sleep(30)
        if kind == "500":
            return web.Response(status=500, text="boom")
        if kind == "broken":  # up, right version, wrong answers (say, corrupted weights)
            body = json.dumps({"results": [{"score": 0.1, "label": "not_match"}], "model_version": V}).encode()
            return web.Response(body=body, content_type="application/json", headers={"X-Model-Version": V})
        if kind == "422":
            return web.json_response({"error": {"code": "invalid_request", "message": "no", "request_id": "r"}},
                                     status=422)
        version = "demo-v0-20200101" if kind == "wrong-version" else V
        return web.Response(body=OK_BODY, content_type="application/json", headers={"X-Model-Version": version})

    app = web.Application()
    app.router.add_post("/v1/similarity", handler)
    app["calls"] = calls
    app["headers"] = seen
    return app


class Fleet:
    def __init__(self, settings: UpstreamSettings | None = None) -> None:
        self.settings = settings or UpstreamSettings()
        self.metrics = GatewayMetrics()
        self.nodes = NodeSet(self.metrics)
        self.balancer = Balancer(Topology(), self.nodes)
        self.outliers = OutlierDetector(HealthSettings(), self.nodes, self.metrics)
        self.runners: list[web.AppRunner] = []
        self.apps: dict[str, web.Application] = {}

    async def start(self, nodes: dict[str, tuple[str, str]], session: aiohttp.ClientSession) -> Upstream:
        """``nodes``: name -> (region, behaviour)."""
        self.probes = HealthProbes(HealthSettings(), self.nodes, session, self.metrics)
        specs = []
        for name, (region, kind) in nodes.items():
            app = behaving(kind)
            runner = web.AppRunner(app, shutdown_timeout=0.2)  # a hanging handler is cut off at cleanup
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.runners.append(runner)
            port = runner.addresses[0][1]
            url = f"http://127.0.0.1:{port}"
            self.apps[name] = app
            specs.append(NodeSpec(region, "blue", url))
        added, _ = self.nodes.sync(specs)
        for node in added:  # as probes would have found them
            node.healthy, node.model_version = True, V
        self.client = Http1Pool(connect_timeout_s=self.settings.connect_timeout_ms / 1000)
        self.upstream = Upstream(self.settings, self.client, self.outliers, self.metrics)
        return self.upstream

    def calls(self, name: str) -> int:
        return len(self.apps[name]["calls"])

    async def close(self) -> None:
        if hasattr(self, "client"):
            await self.client.close()
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def call(fleet: Fleet, regions: list[str], deadline_s: float = 10.0) -> object:
    loop = asyncio.get_running_loop()
    return await fleet.upstream.call("/v1/similarity", b'{"pairs": [["a", "b"]]}',
                                     Plan(regions[0], regions, "blue", V, fleet.balancer), loop.time() + deadline_s,
                                     "req-1")


@pytest.mark.parametrize("bad", ["500", "wrong-version", "hang"])
async def test_a_failed_attempt_is_retried_in_the_next_region(session: aiohttp.ClientSession, bad: str) -> None:
    fleet = Fleet(UpstreamSettings(attempt_timeout_ms=300))
    await fleet.start({"bad": ("home", bad), "good": ("next", "ok")}, session)
    try:
        answer = await call(fleet, ["home", "next"])
        assert (answer.region, answer.attempts, answer.body) == ("next", 2, OK_BODY)  # type: ignore[attr-defined]
        bad_node = next(n for n in fleet.nodes if n.spec.region == "home")
        assert bad_node.failed_calls == 1
        if bad == "wrong-version":
            assert bad_node.model_version == "demo-v0-20200101"  # not chosen again until a probe says otherwise
            assert fleet.balancer.pick("home", "blue", V, set()) is None
        assert all(n.outstanding == 0 for n in fleet.nodes)  # every attempt's outcome was reported
    finally:
        await fleet.close()


async def test_the_node_rejecting_the_request_is_not_retried(session: aiohttp.ClientSession) -> None:
    fleet = Fleet()
    await fleet.start({"picky": ("home", "422"), "good": ("next", "ok")}, session)
    try:
        with pytest.raises(NodeRejected) as info:
            await call(fleet, ["home", "next"])
        assert info.value.status == 422 and fleet.calls("good") == 0
    finally:
        await fleet.close()


async def test_hedging_sends_a_twin_to_the_next_node(session: aiohttp.ClientSession) -> None:
    fleet = Fleet(UpstreamSettings(hedge_after_ms=30, hedge_budget_percent=100))
    await fleet.start({"slow": ("home", "slow"), "fast": ("next", "ok")}, session)
    try:
        answer = await call(fleet, ["home", "next"])
        assert (answer.region, answer.attempts) == ("next", 2)  # type: ignore[attr-defined]
        assert fleet.metrics.hedges._value.get() == 1
    finally:
        await fleet.close()
    fleet = Fleet()  # no hedging: the slow node answers, once
    await fleet.start({"slow": ("home", "slow"), "fast": ("next", "ok")}, session)
    try:
        answer = await call(fleet, ["home", "next"])
        assert (answer.region, answer.attempts) == ("home", 1)  # type: ignore[attr-defined]
        assert fleet.calls("fast") == 0
    finally:
        await fleet.close()


async def test_retries_stop_at_the_budget_and_at_max_attempts(session: aiohttp.ClientSession) -> None:
    fleet = Fleet(UpstreamSettings(max_attempts=2))
    upstream = await fleet.start({f"n{i}": (f"r{i}", "500") for i in range(4)}, session)
    try:
        with pytest.raises(Unavailable, match="no node answered"):
            await call(fleet, ["r0", "r1", "r2", "r3"])
        assert sum(fleet.calls(f"n{i}") for i in range(4)) == 2
        upstream.budget = RetryBudget(0.0, floor_per_s=0.0)  # no retries at all
        with pytest.raises(Unavailable, match="retry budget"):
            await call(fleet, ["r0", "r1", "r2", "r3"])
    finally:
        await fleet.close()


async def test_an_expired_deadline_is_not_sent_on(session: aiohttp.ClientSession) -> None:
    fleet = Fleet()
    await fleet.start({"good": ("home", "ok")}, session)
    try:
        with pytest.raises(DeadlineExceeded):
            await call(fleet, ["home"], deadline_s=-1)
        assert fleet.calls("good") == 0
    finally:
        await fleet.close()


async def test_no_region_left_names_why(session: aiohttp.ClientSession) -> None:
    fleet = Fleet()
    upstream = await fleet.start({}, session)
    loop = asyncio.get_running_loop()
    with pytest.raises(Unavailable, match="cn-north: residency"):
        await upstream.call("/v1/similarity", b"{}", Plan("cn-east", [], "blue", V, fleet.balancer,
                                                          {"cn-east": "drained", "cn-north": "residency"}),
                            loop.time() + 5, "r")


async def test_hedge_delay_follows_the_regions_recent_p95(session: aiohttp.ClientSession) -> None:
    fleet = Fleet(UpstreamSettings(hedge_after_ms=20, hedge_p95=True))
    upstream = await fleet.start({"good": ("home", "ok")}, session)
    try:
        assert upstream.hedge_delay("home") == 0.02  # too few answers yet: the fixed delay
        for _ in range(25):
            await call(fleet, ["home"])
        measured = sorted(upstream._latencies["home"])[int(0.95 * 24)]
        assert upstream.hedge_delay("home") == max(0.02, measured)
        upstream._latencies["home"].extend([0.5] * 40)  # the region got slow: hedge later
        assert upstream.hedge_delay("home") == 0.5
    finally:
        await fleet.close()
    assert Upstream(UpstreamSettings(), Http1Pool(), fleet.outliers, fleet.metrics).hedge_delay("x") == 0


async def test_the_deep_probe_takes_out_a_node_that_answers_wrongly(session: aiohttp.ClientSession) -> None:
    fleet = Fleet()
    await fleet.start({"broken": ("home", "broken"), "good": ("home", "ok")}, session)
    try:
        nodes = {n.url: n for n in fleet.nodes}
        for node in nodes.values():
            await fleet.probes.deep_probe(node)
        broken = next(n for n in nodes.values() if fleet.calls("broken") and n.deep_ok is False)
        assert not broken.available(0) and sum(n.deep_ok for n in nodes.values()) == 1
        assert fleet.balancer.candidates("home", "blue", V) == [n for n in nodes.values() if n.deep_ok]
    finally:
        await fleet.close()


async def test_the_deadline_and_request_id_travel_to_the_node(session: aiohttp.ClientSession) -> None:
    fleet = Fleet()
    await fleet.start({"good": ("home", "ok")}, session)
    try:
        await call(fleet, ["home"], deadline_s=2.5)
        (headers,) = fleet.apps["good"]["headers"]
        assert 2000 < int(headers["X-Deadline-Ms"]) <= 2500  # what is left of the caller's deadline
        assert headers["X-Request-ID"] == "req-1"
    finally:
        await fleet.close()
