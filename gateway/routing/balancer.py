"""Where a call may go: the region order for a client, and a node inside a region.

Regions: the client's home region, then its failover list, skipping regions its
residency forbids, regions that are drained or failed in the registry, and regions with
no node that is healthy, of the needed color and serving the registry's version; a home
region below its ``min_healthy`` nodes spills that share of calls to the next. Nodes:
better of two random choices by outstanding requests, EWMA latency breaking ties.

Pure policy: it reads the node set and does no I/O; the clock and the randomness are
injected, so tests drive it with made-up state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from geogate.gateway.routing.nodes import NodeSet, NodeState
from geogate.gateway.routing.topology import Topology
from geogate.shared.registry import RegistryRecord

__all__ = ["Balancer", "Plan"]


@dataclass
class Plan:
    """One call's regions in order, and the nodes it has tried: each attempt asks
    ``next_node`` for the best node not tried yet."""

    home: str
    regions: list[str]
    color: str
    version: str
    balancer: Balancer = field(repr=False)
    skipped: dict[str, str] = field(default_factory=dict)  # region -> why (residency, drained, ...)
    spilled: bool = False  # the home region is short of healthy nodes and this call was sent on
    tried: set[str] = field(default_factory=set)  # node URLs

    def reason_for(self, served: str) -> str:
        """Why a call served in ``served`` went there (for X-Route and metrics)."""
        if served == self.home:
            return "home"
        if self.spilled:
            return "failover:spillover"
        why = self.skipped.get(self.home)
        return f"failover:{why}" if why else "failover:retry"

    def next_node(self) -> NodeState | None:
        for region in self.regions:
            node = self.balancer.pick(region, self.color, self.version, self.tried)
            if node is not None:
                self.tried.add(node.url)
                return node
        return None


class Balancer:
    def __init__(self, topology: Topology, nodes: NodeSet, *, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.topology = topology
        self.nodes = nodes
        self._clock = clock
        self._rng = rng or random.Random()

    def candidates(self, region: str, color: str, version: str) -> list[NodeState]:
        now = self._clock()
        return [
            n for n in self.nodes.in_region(region)
            if n.spec.color == color and n.model_version == version and n.available(now)
        ]

    def plan(self, home: str, snapshot: RegistryRecord, color: str, version: str,
             client_regions: frozenset[str] = frozenset()) -> Plan:
        """``client_regions``: the only regions this client's calls may be served in (none: any)."""
        allowed_by_home = self.topology.region(home)
        regions: list[str] = []
        skipped: dict[str, str] = {}
        for region in self.topology.order(home):
            if not allowed_by_home.allows(region):
                skipped[region] = "residency"
            elif client_regions and region not in client_regions:
                skipped[region] = "client-regions"
            elif (state := snapshot.region_state(region)) != "active":
                skipped[region] = state
            elif not self.candidates(region, color, version):
                skipped[region] = "no-healthy-node"
            else:
                regions.append(region)
        # Regions the failover list does not name, but residency would allow, stay out:
        # the operator's order is the contract.
        spilled = False
        if len(regions) > 1 and regions[0] == home:
            # Spill-over (Envoy's priority levels): a home region with fewer healthy nodes
            # than it needs sends that share of calls to the next region instead of
            # overloading its survivors; it stays in the plan as a fallback.
            need = self.topology.region(home).min_healthy
            have = len(self.candidates(home, color, version))
            if have < need and self._rng.random() < 1 - have / need:
                regions[0], regions[1] = regions[1], regions[0]
                spilled = True
        return Plan(home, regions, color, version, self, skipped, spilled)

    def pick(self, region: str, color: str, version: str, exclude: set[str]) -> NodeState | None:
        choices = [n for n in self.candidates(region, color, version) if n.url not in exclude]
        if len(choices) <= 1:
            return choices[0] if choices else None
        a, b = self._rng.sample(choices, 2)
        return min((a, b), key=lambda n: (n.outstanding, n.ewma_ms))

    def serving_regions(self, color: str, version: str) -> list[str]:
        """The regions where some node could serve ``color`` at ``version`` now."""
        return [r for r in sorted(self.nodes.regions()) if self.candidates(r, color, version)]
