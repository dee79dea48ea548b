"""Region plans and node choice, on hand-made health state (no processes needed)."""

from __future__ import annotations

import random
from collections import Counter

import aiohttp

from gateway.balancer import Balancer
from gateway.health import HealthChecker, NodeState
from gateway.metrics import GatewayMetrics
from gateway.topology import NodeSpec, parse_topology
from shared.config import GatewayConfig
from shared.registry import ColorInfo, RegistryRecord

V = "demo-v1-20261124"
SNAPSHOT = RegistryRecord(epoch=1, colors={"blue": ColorInfo(V)}, regions={"us-east": "drained"})
TOPOLOGY = parse_topology({"regions": {
    "cn-east": {"failover": ["cn-north", "eu-central"], "residency": ["cn-*"], "min_healthy": 4},
    "cn-north": {}, "eu-central": {"failover": ["us-east", "cn-east"]}, "us-east": {},
}})


async def world(healthy: dict[str, int], **node_overrides: object) -> tuple[Balancer, HealthChecker]:
    async with aiohttp.ClientSession() as session:
        health = HealthChecker(GatewayConfig(), session, GatewayMetrics())
    for region, count in healthy.items():
        for i in range(count):
            node = NodeState(NodeSpec(region, "blue", f"http://{region}-{i}"), healthy=True, model_version=V)
            for key, value in node_overrides.items():
                setattr(node, key, value)
            health.nodes[node.url] = node
    return Balancer(TOPOLOGY, health, random.Random(7)), health


async def test_plan_skips_forbidden_drained_and_empty_regions() -> None:
    balancer, _ = await world({"cn-east": 4, "cn-north": 1, "eu-central": 1, "us-east": 1})
    plan = balancer.plan("cn-east", SNAPSHOT, "blue", V)
    assert plan.regions == ["cn-east", "cn-north"] and plan.skipped == {"eu-central": "residency"}
    plan = balancer.plan("eu-central", SNAPSHOT, "blue", V)
    assert plan.regions == ["eu-central", "cn-east"] and plan.skipped == {"us-east": "drained"}
    assert balancer.plan("eu-central", SNAPSHOT, "blue", "other-version").regions == []  # fencing by version
    assert balancer.plan("eu-central", SNAPSHOT, "green", V).regions == []


async def test_a_region_short_of_healthy_nodes_spills_the_shortfall() -> None:
    balancer, _ = await world({"cn-east": 1, "cn-north": 2})  # cn-east needs 4: 3/4 of calls move on
    plans = [balancer.plan("cn-east", SNAPSHOT, "blue", V) for _ in range(2000)]
    spilled = sum(p.spilled for p in plans)
    assert 1350 < spilled < 1650, spilled
    assert all(p.regions[0] == "cn-north" and "cn-east" in p.regions for p in plans if p.spilled)
    assert {p.reason_for("cn-north") for p in plans if p.spilled} == {"failover:spillover"}
    full, _ = await world({"cn-east": 4, "cn-north": 2})
    assert not any(full.plan("cn-east", SNAPSHOT, "blue", V).spilled for _ in range(200))


async def test_node_choice_prefers_fewer_outstanding_calls() -> None:
    balancer, health = await world({"eu-central": 3})
    nodes = list(health.nodes.values())
    nodes[0].outstanding, nodes[1].outstanding, nodes[2].outstanding = 0, 5, 9
    picks = Counter(balancer.pick("eu-central", "blue", V, set()).url for _ in range(600))  # type: ignore[union-attr]
    assert picks[nodes[0].url] > picks[nodes[1].url] > picks[nodes[2].url]
    assert picks[nodes[2].url] == 0  # the busiest never wins a pair
    assert balancer.pick("eu-central", "blue", V, {n.url for n in nodes}) is None
    nodes[0].healthy = False
    assert balancer.pick("eu-central", "blue", V, {nodes[1].url}).url == nodes[2].url  # type: ignore[union-attr]


async def test_passive_ejection_doubles_and_never_empties_a_region() -> None:
    import time

    _, health = await world({"eu-central": 2})
    a, b = health.nodes.values()
    for _ in range(2):
        health.call_failed(a, "connect")
    assert a.available(time.monotonic())  # two failures are not yet three
    health.call_failed(a, "connect")
    now = time.monotonic()
    assert not a.available(now) and 0.9 < a.ejected_until - now <= 1.0
    for _ in range(3):
        health.call_failed(b, "connect")
    assert b.available(time.monotonic())  # ejecting b too would exceed 50% of the region
    a.ejected_until = 0.0  # its ejection ran out
    for _ in range(3):
        health.call_failed(a, "connect")
    assert 1.9 < a.ejected_until - time.monotonic() <= 2.0  # the second ejection lasts twice as long
    health.call_succeeded(a, 12.0)
    assert a.failed_calls == 0 and a.ewma_ms == 12.0
