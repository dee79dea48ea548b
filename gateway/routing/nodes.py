"""The nodes this gateway knows and what it knows of each: the one owner of node state.

Envoy's split: the node set holds the state; active probes (``routing.probes``) and
outlier detection (``routing.outliers``) are its only writers; the balancer and the
control plane only read it. Which nodes belong is decided by ``routing.discovery``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.ops.stats import RecentStats
from geogate.gateway.routing.topology import NodeSpec

__all__ = ["NodeSet", "NodeState"]


@dataclass(eq=False)
class NodeState:
    spec: NodeSpec
    healthy: bool = False
    model_version: str | None = None
    checksum: str | None = None
    queue_depth: int = 0  # items waiting at the node, from its last ready probe
    outstanding: int = 0
    ewma_ms: float = 0.0
    good_probes: int = 0
    bad_probes: int = 0
    failed_calls: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    probe_ms: float = 0.0
    last_error: str = ""
    deep_ok: bool = True
    recent: RecentStats = field(default_factory=RecentStats)  # its attempts: the admin status's error rate, p99

    @property
    def url(self) -> str:
        return self.spec.url

    def available(self, now: float) -> bool:
        return self.healthy and self.deep_ok and now >= self.ejected_until


class NodeSet:
    """Every known node by URL. ``changed()`` after any change to who is available keeps
    the healthy-nodes gauge true (the alerts on it read it)."""

    def __init__(self, metrics: GatewayMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self._nodes: dict[str, NodeState] = {}

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self._nodes.values())

    def in_region(self, region: str) -> list[NodeState]:
        return [n for n in self._nodes.values() if n.spec.region == region]

    def regions(self) -> set[str]:
        return {n.spec.region for n in self._nodes.values()}

    def sync(self, specs: Iterable[NodeSpec]) -> tuple[list[NodeState], list[NodeState]]:
        """Exactly these nodes from now on; (the nodes added, the nodes removed)."""
        wanted = {s.url: s for s in specs}
        removed = [self._nodes.pop(url) for url in list(self._nodes) if url not in wanted]
        added = [NodeState(spec) for url, spec in wanted.items() if url not in self._nodes]
        for node in added:
            self._nodes[node.url] = node
        self.changed()
        return added, removed

    def changed(self) -> None:
        now = self.clock()
        counts: dict[tuple[str, ...], int] = {}
        for n in self._nodes.values():
            key = (n.spec.region, n.spec.color)
            counts[key] = counts.get(key, 0) + (1 if n.available(now) else 0)
        self.metrics.healthy_nodes.publish(counts)
