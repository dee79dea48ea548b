"""Passive health: what each call to a node says about it.

The upstream reports every attempt here and mutates no node itself: ``begin`` when it
sends, then one of ``succeeded``, ``declined`` (a 429 or a 4xx: the node is fine),
``failed`` or ``abandoned`` (cancelled, or cut off by the caller's own deadline: says
nothing about the node). ``eject_after`` failed calls in a row eject a node for
``eject_base_s``, doubling on each repeat up to 30 s, but never more than
``max_ejection_percent`` of a region's nodes at once, so a bad spell cannot empty a
region by itself (Envoy's outlier detection). Pure: the clock is injected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from geogate.gateway.config import HealthSettings
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.routing.nodes import NodeSet, NodeState

__all__ = ["MAX_EJECTION_S", "OutlierDetector"]

log = logging.getLogger("geogate.gateway.health")

MAX_EJECTION_S = 30.0


class OutlierDetector:
    def __init__(self, settings: HealthSettings, nodes: NodeSet, metrics: GatewayMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.nodes = nodes
        self.metrics = metrics
        self.clock = clock

    def begin(self, node: NodeState) -> None:
        node.outstanding += 1

    def succeeded(self, node: NodeState, ms: float) -> None:
        node.outstanding -= 1
        node.recent.record(ms, ok=True)
        node.failed_calls = 0
        node.ewma_ms = ms if node.ewma_ms == 0 else 0.8 * node.ewma_ms + 0.2 * ms

    def declined(self, node: NodeState, ms: float) -> None:
        node.outstanding -= 1
        node.recent.record(ms, ok=True)

    def abandoned(self, node: NodeState) -> None:
        node.outstanding -= 1

    def failed(self, node: NodeState, ms: float, reason: str, *, counts: bool = True,
               serves: str | None = None) -> None:
        """A failed attempt; ``counts``: towards ejection (a 504 the caller's own deadline
        caused does not); ``serves``: the version the node answered with, when it was the
        wrong one (the balancer then passes it over until a probe says otherwise)."""
        node.outstanding -= 1
        node.recent.record(ms, ok=False)
        if serves is not None:
            node.model_version = serves
        if counts:
            self._count(node, reason)

    def _count(self, node: NodeState, reason: str) -> None:
        node.failed_calls += 1
        node.last_error = reason
        if node.failed_calls < self.settings.eject_after:
            return
        now = self.clock()
        peers = self.nodes.in_region(node.spec.region)
        ejected = sum(1 for n in peers if n.ejected_until > now)
        if (ejected + 1) * 100 > self.settings.max_ejection_percent * len(peers) and ejected > 0:
            return  # ejecting one more would exceed the cap; health probes still decide
        node.ejections += 1
        seconds = min(MAX_EJECTION_S, self.settings.eject_base_s * 2 ** (node.ejections - 1))
        node.ejected_until = now + seconds
        node.failed_calls = 0
        self.metrics.ejections.labels(node.spec.region, node.spec.color).inc()
        log.warning("ejected %s for %.1fs after failed calls (%s)", node.url, seconds, reason)
        self.nodes.changed()
