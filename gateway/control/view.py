"""What the control plane sees of its gateway: a narrow, read-only view, built by the
process that assembles both planes (``gateway/server.py``).

The control plane reads registry state, node state, recent traffic and the clients, and
asks the gateway for one thing only: to apply a registry record it has just written
(``watcher.apply``), so that this gateway serves by it before the answer goes out. It
never holds the data plane itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from geogate.gateway.ops.stats import StatsBook
from geogate.gateway.routing.balancer import Balancer
from geogate.gateway.routing.nodes import NodeSet
from geogate.shared.clients import Client, Limits
from geogate.shared.networks import IPAddress
from geogate.shared.registry import Registry, RegistryWatcher

__all__ = ["GatewayView", "Located"]

# (country or None, home region, how it was found: "geoip" or "default")
Located = tuple[str | None, str, str]


@dataclass(frozen=True)
class GatewayView:
    region: str
    watcher: RegistryWatcher  # the snapshot this gateway serves by, its age, and apply()
    nodes: NodeSet
    balancer: Balancer  # dry-run plans (admin route)
    stats: StatsBook
    locate: Callable[[IPAddress], Located]
    clients: Callable[[], dict[str, tuple[Client, str]]]  # name -> (client, "file" or "registry")
    anonymous: bool
    default_limits: Limits

    @property
    def registry(self) -> Registry:
        """Where changes go: epoch compare-and-set, audited."""
        return self.watcher.registry

    def known_regions(self) -> set[str]:
        return set(self.watcher.snapshot.regions) | set(self.balancer.topology.regions)
