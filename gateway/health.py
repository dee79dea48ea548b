"""Which nodes may take calls: active probes, a deep probe, passive ejection.

- Active: every node's ``/health/ready`` is probed every ``probe_interval_s`` (with
  jitter); ``healthy_after`` good probes in a row make a node healthy, ``unhealthy_after``
  bad ones unhealthy. A probe reads the version and checksum the node serves.
- Deep: every ``deep_probe_interval_s`` a known pair is scored; a node that is up but
  answers it wrongly (broken weights) is marked unhealthy like a failed probe.
- Passive: ``eject_after`` failed calls in a row eject a node for ``eject_base_s``,
  doubling on each repeat (up to 30 s), but never more than ``max_ejection_percent`` of
  a region's nodes at once (so a bad spell cannot empty a region by itself).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
import msgspec

from gateway.metrics import GatewayMetrics
from gateway.stats import RecentStats
from gateway.topology import NodeSpec
from shared.config import GatewayConfig

__all__ = ["HealthChecker", "NodeState"]

log = logging.getLogger("geogate.gateway.health")

MAX_EJECTION_S = 30.0
DEEP_PROBE_PAIR = ["浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"]
DEEP_PROBE_BODY = msgspec.json.encode({"pairs": [DEEP_PROBE_PAIR]})


class _Ready(msgspec.Struct):
    model_version: str | None = None
    checksum: str | None = None
    queue_depth: int = 0


class _Scored(msgspec.Struct):
    results: list[dict[str, object]]


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

    def observe_latency(self, ms: float) -> None:
        self.ewma_ms = ms if self.ewma_ms == 0 else 0.8 * self.ewma_ms + 0.2 * ms


class HealthChecker:
    def __init__(self, config: GatewayConfig, session: aiohttp.ClientSession, metrics: GatewayMetrics) -> None:
        self.config = config
        self.session = session
        self.metrics = metrics
        self.nodes: dict[str, NodeState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def sync(self, specs: Iterable[NodeSpec]) -> None:
        """Probe exactly these nodes from now on (configuration plus live heartbeats)."""
        wanted = {s.url: s for s in specs}
        for url in list(self.nodes):
            if url not in wanted:
                self._tasks.pop(url).cancel()
                del self.nodes[url]
        for url, spec in wanted.items():
            if url not in self.nodes:
                self.nodes[url] = node = NodeState(spec)
                self._tasks[url] = asyncio.create_task(self._probe_loop(node), name=f"probe {url}")
        self._publish()

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    def in_region(self, region: str) -> list[NodeState]:
        return [n for n in self.nodes.values() if n.spec.region == region]

    # -- passive ------------------------------------------------------------------------

    def call_succeeded(self, node: NodeState, ms: float) -> None:
        node.failed_calls = 0
        node.observe_latency(ms)

    def call_failed(self, node: NodeState, reason: str) -> None:
        node.failed_calls += 1
        node.last_error = reason
        if node.failed_calls < self.config.eject_after:
            return
        now = time.monotonic()
        peers = self.in_region(node.spec.region)
        ejected = sum(1 for n in peers if n.ejected_until > now)
        if (ejected + 1) * 100 > self.config.max_ejection_percent * len(peers) and ejected > 0:
            return  # ejecting one more would exceed the cap; health probes still decide
        node.ejections += 1
        seconds = min(MAX_EJECTION_S, self.config.eject_base_s * 2 ** (node.ejections - 1))
        node.ejected_until = now + seconds
        node.failed_calls = 0
        self.metrics.ejections.labels(node.spec.region, node.spec.color).inc()
        log.warning("ejected %s for %.1fs after failed calls (%s)", node.url, seconds, reason)
        self._publish()

    # -- active ---------------------------------------------------------------------------

    async def _probe_loop(self, node: NodeState) -> None:
        interval = self.config.probe_interval_s
        next_deep = time.monotonic()
        while True:
            await self.probe(node)
            if self.config.deep_probe_interval_s > 0 and node.healthy and time.monotonic() >= next_deep:
                await self.deep_probe(node)
                next_deep = time.monotonic() + self.config.deep_probe_interval_s
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))

    async def probe(self, node: NodeState) -> None:
        started = time.perf_counter()
        ok, error = False, ""
        try:
            timeout = aiohttp.ClientTimeout(total=max(0.2, self.config.probe_interval_s))
            async with self.session.get(node.url + "/health/ready", timeout=timeout) as resp:
                body = await resp.read()
                if resp.status == 200:
                    ready = msgspec.json.decode(body, type=_Ready)
                    node.model_version, node.checksum = ready.model_version, ready.checksum
                    node.queue_depth = ready.queue_depth
                    ok = True
                else:
                    error = f"ready {resp.status}"
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, OSError) as exc:
            error = type(exc).__name__
        node.probe_ms = (time.perf_counter() - started) * 1000
        self.metrics.probe_latency.labels(node.spec.region).observe(node.probe_ms / 1000)
        if ok:
            node.good_probes, node.bad_probes = node.good_probes + 1, 0
            if not node.healthy and node.good_probes >= self.config.healthy_after:
                node.healthy = True
                log.info("node %s (%s %s) is healthy", node.url, node.spec.region, node.spec.color)
                self._publish()
        else:
            node.bad_probes, node.good_probes = node.bad_probes + 1, 0
            node.last_error = error
            if node.healthy and node.bad_probes >= self.config.unhealthy_after:
                node.healthy = False
                log.warning("node %s is unhealthy: %s", node.url, error)
                self._publish()

    async def deep_probe(self, node: NodeState) -> None:
        """Score a known pair; a node that is up but answers it wrongly is taken out."""
        ok = False
        try:
            timeout = aiohttp.ClientTimeout(total=max(1.0, self.config.probe_interval_s * 2))
            async with self.session.post(node.url + "/v1/similarity", data=DEEP_PROBE_BODY, timeout=timeout,
                                         headers={"Content-Type": "application/json"}) as resp:
                if resp.status == 200:
                    scored = msgspec.json.decode(await resp.read(), type=_Scored)
                    ok = bool(scored.results) and scored.results[0].get("label") == "exact_match"
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, OSError):
            return  # unreachable: the ready probe will say so; this probe judges answers only
        if ok != node.deep_ok:
            log.warning("node %s %s the deep probe", node.url, "passes" if ok else "FAILS")
            node.deep_ok = ok
            self._publish()

    def _publish(self) -> None:
        now = time.monotonic()
        counts: dict[tuple[str, ...], int] = {}
        for n in self.nodes.values():
            key = (n.spec.region, n.spec.color)
            counts[key] = counts.get(key, 0) + (1 if n.available(now) else 0)
        self.metrics.healthy_nodes.publish(counts)
