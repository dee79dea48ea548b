"""Region plans, node choice and passive ejection: pure policy on hand-made node state
and a made-up clock (no processes, no network)."""

from __future__ import annotations

import random
import time
from collections import Counter

from geogate.gateway.config import HealthSettings
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.routing.balancer import Balancer
from geogate.gateway.routing.nodes import NodeSet, NodeState
from geogate.gateway.routing.outliers import OutlierDetector
from geogate.gateway.routing.topology import NodeSpec, parse_topology
from geogate.shared.registry import ColorInfo, RegistryRecord

V = "demo-v1-20261124"
SNAPSHOT = RegistryRecord(epoch=1, colors={"blue": ColorInfo(V)}, regions={"us-east": "drained"})
TOPOLOGY = parse_topology({"regions": {
    "cn-east": {"failover": ["cn-north", "eu-central"], "residency": ["cn-*"], "min_healthy": 4},
    "cn-north": {}, "eu-central": {"failover": ["us-east", "cn-east"]}, "us-east": {},
}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def world(healthy: dict[str, int], clock: Clock | None = None) -> tuple[Balancer, NodeSet]:
    clock = clock or Clock()
    nodes = NodeSet(GatewayMetrics(), clock)
    added, _ = nodes.sync(NodeSpec(region, "blue", f"http://{region}-{i}")
                          for region, count in healthy.items() for i in range(count))
    for node in added:  # as probes would have found them
        node.healthy, node.model_version = True, V
    return Balancer(TOPOLOGY, nodes, clock=clock, rng=random.Random(7)), nodes


def test_plan_skips_forbidden_drained_and_empty_regions() -> None:
    balancer, _ = world({"cn-east": 4, "cn-north": 1, "eu-central": 1, "us-east": 1})
    plan = balancer.plan("cn-east", SNAPSHOT, "blue", V)
    assert plan.regions == ["cn-east", "cn-north"] and plan.skipped == {"eu-central": "residency"}
    plan = balancer.plan("eu-central", SNAPSHOT, "blue", V)
    assert plan.regions == ["eu-central", "cn-east"] and plan.skipped == {"us-east": "drained"}
    assert balancer.plan("eu-central", SNAPSHOT, "blue", "other-version").regions == []  # fencing by version
    assert balancer.plan("eu-central", SNAPSHOT, "green", V).regions == []


def test_a_region_short_of_healthy_nodes_spills_the_shortfall() -> None:
    balancer, _ = world({"cn-east": 1, "cn-north": 2})  # cn-east needs 4: 3/4 of calls move on
    plans = [balancer.plan("cn-east", SNAPSHOT, "blue", V) for _ in range(2000)]
    spilled = sum(p.spilled for p in plans)
    assert 1350 < spilled < 1650, spilled
    assert all(p.regions[0] == "cn-north" and "cn-east" in p.regions for p in plans if p.spilled)
    assert {p.reason_for("cn-north") for p in plans if p.spilled} == {"failover:spillover"}
    full, _ = world({"cn-east": 4, "cn-north": 2})
    assert not any(full.plan("cn-east", SNAPSHOT, "blue", V).spilled for _ in range(200))


def test_node_choice_prefers_fewer_outstanding_calls() -> None:
    balancer, node_set = world({"eu-central": 3})
    nodes = list(node_set)
    nodes[0].outstanding, nodes[1].outstanding, nodes[2].outstanding = 0, 5, 9
    picks = Counter(balancer.pick("eu-central", "blue", V, set()).url for _ in range(600))  # type: ignore[union-attr]
    assert picks[nodes[0].url] > picks[nodes[1].url] > picks[nodes[2].url]
    assert picks[nodes[2].url] == 0  # the busiest never wins a pair
    assert balancer.pick("eu-central", "blue", V, {n.url for n in nodes}) is None
    nodes[0].healthy = False
    assert balancer.pick("eu-central", "blue", V, {nodes[1].url}).url == nodes[2].url  # type: ignore[union-attr]


def test_passive_ejection_doubles_and_never_empties_a_region() -> None:
    clock = Clock()
    _, nodes = world({"eu-central": 2}, clock)
    outliers = OutlierDetector(HealthSettings(), nodes, GatewayMetrics(), clock)
    a, b = nodes

    def fail(node: NodeState) -> None:
        outliers.begin(node)
        outliers.failed(node, 5.0, "connect")

    for _ in range(2):
        fail(a)
    assert a.available(clock.now)  # two failures are not yet three
    fail(a)
    assert not a.available(clock.now) and a.ejected_until == clock.now + 1.0
    for _ in range(3):
        fail(b)
    assert b.available(clock.now)  # ejecting b too would exceed 50% of the region
    clock.now = a.ejected_until  # its ejection ran out
    assert a.available(clock.now)
    for _ in range(3):
        fail(a)
    assert a.ejected_until == clock.now + 2.0  # the second ejection lasts twice as long
    outliers.begin(a)
    outliers.succeeded(a, 12.0)
    assert a.failed_calls == 0 and a.ewma_ms == 12.0 and a.outstanding == 0


def test_outcomes_that_say_nothing_about_the_node_never_eject_it() -> None:
    clock = Clock()
    _, nodes = world({"eu-central": 2}, clock)
    outliers = OutlierDetector(HealthSettings(eject_after=1), nodes, GatewayMetrics(), clock)
    a = next(iter(nodes))
    for report in (lambda: outliers.declined(a, 3.0), lambda: outliers.abandoned(a),
                   lambda: outliers.failed(a, 3.0, "status 504", counts=False)):
        outliers.begin(a)
        report()
    assert a.available(clock.now) and a.failed_calls == 0 and a.outstanding == 0
    # the 429/4xx and the 504 were attempts (its recent series runs on real time); abandoned was not
    assert a.recent.snapshot(until=time.monotonic() + 1).count == 2
    outliers.begin(a)
    outliers.failed(a, 3.0, "version 'old' != 'new'", serves="old")
    assert a.model_version == "old" and not a.available(clock.now)


def test_the_balancer_reads_time_from_its_clock_only() -> None:
    clock = Clock()
    balancer, nodes = world({"eu-central": 1}, clock)
    (node,) = nodes
    node.ejected_until = clock.now + 5
    assert balancer.pick("eu-central", "blue", V, set()) is None
    clock.now += 5
    assert balancer.pick("eu-central", "blue", V, set()) is node


def test_a_plan_hands_out_each_node_once_region_by_region() -> None:
    balancer, _ = world({"eu-central": 2, "us-east": 1})
    snapshot = RegistryRecord(epoch=1, colors={"blue": ColorInfo(V)})
    plan = balancer.plan("eu-central", snapshot, "blue", V)
    picked = [plan.next_node() for _ in range(4)]
    assert [n.spec.region for n in picked if n] == ["eu-central", "eu-central", "us-east"] and picked[3] is None
    assert len({n.url for n in picked if n}) == 3
