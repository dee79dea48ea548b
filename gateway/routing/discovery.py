"""Which nodes this gateway routes to: the configured ones plus every node that
registered itself by heartbeat from an allowed address (``node_networks``).

Anyone who can write to the store could register a node, so a self-registered URL must
be a plain IP address inside the deployment's own networks (``topology.refuse_node_url``);
refused heartbeats are logged once each. A store that is down keeps the last set.
"""

from __future__ import annotations

import asyncio
import logging

from geogate.gateway.routing.balancer import Balancer
from geogate.gateway.routing.probes import HealthProbes
from geogate.gateway.routing.topology import NodeSpec, Topology, refuse_node_url
from geogate.shared.errors import StoreUnavailable
from geogate.shared.heartbeats import Heartbeats, NodeHeartbeat, merge_topology
from geogate.shared.networks import IPNetwork

__all__ = ["NodeDiscovery"]

log = logging.getLogger("geogate.gateway")


class NodeDiscovery:
    def __init__(self, topology: Topology, heartbeats: Heartbeats[NodeHeartbeat], probes: HealthProbes,
                 balancer: Balancer, networks: tuple[IPNetwork, ...]) -> None:
        self.topology = topology
        self.heartbeats = heartbeats
        self.probes = probes
        self.balancer = balancer
        self.networks = networks
        self._refused: set[str] = set()  # node URLs already warned about

    async def refresh(self) -> None:
        try:
            beats = await self.heartbeats.live()
        except StoreUnavailable:
            return
        configured = {n.url for n in self.topology.nodes}
        live = []
        for beat in beats:
            why = "" if beat.url.rstrip("/") in configured else refuse_node_url(beat.url, self.networks)
            if not why:
                live.append(beat)
            elif beat.url not in self._refused:
                self._refused.add(beat.url)
                log.warning("ignoring the heartbeat of node %r (%s %s): %s", beat.url[:200], beat.region, beat.color,
                            why)
        merged = merge_topology(((n.region, n.color, n.url) for n in self.topology.nodes), live)
        self.probes.sync(NodeSpec(n.region, n.color, n.url) for n in merged)  # URLs come normalized
        self.balancer.topology = self.topology.with_regions(n.region for n in merged)

    async def keep_refreshing(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh()
