"""Active health checks: which nodes answer, and with which model.

- Every node's ``/health/ready`` is probed every ``probe_interval_s`` (with jitter);
  ``healthy_after`` good probes in a row make a node healthy, ``unhealthy_after`` bad
  ones unhealthy. A probe reads the version and checksum the node serves.
- Deep: every ``deep_probe_interval_s`` a known pair is scored; a node that is up but
  answers it wrongly (broken weights) is taken out like one that fails its probes.

Passive health (ejection after failed calls) is ``routing.outliers``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable

import aiohttp
import msgspec

from geogate.gateway.config import HealthSettings
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.gateway.routing.nodes import NodeSet, NodeState
from geogate.gateway.routing.topology import NodeSpec
from geogate.shared.lifecycle import cancel

__all__ = ["HealthProbes"]

log = logging.getLogger("geogate.gateway.health")

DEEP_PROBE_PAIR = ["浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"]
DEEP_PROBE_BODY = msgspec.json.encode({"pairs": [DEEP_PROBE_PAIR]})


class _Ready(msgspec.Struct):
    model_version: str | None = None
    checksum: str | None = None
    queue_depth: int = 0


class _Scored(msgspec.Struct):
    results: list[dict[str, object]]


class HealthProbes:
    """One probe loop per node of the node set."""

    def __init__(self, settings: HealthSettings, nodes: NodeSet, session: aiohttp.ClientSession,
                 metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.nodes = nodes
        self.session = session
        self.metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def sync(self, specs: Iterable[NodeSpec]) -> None:
        """Probe exactly these nodes from now on (configuration plus live heartbeats)."""
        added, removed = self.nodes.sync(specs)
        for node in removed:
            self._tasks.pop(node.url).cancel()
        for node in added:
            self._tasks[node.url] = asyncio.create_task(self._probe_loop(node), name=f"probe {node.url}")

    async def close(self) -> None:
        await cancel(*self._tasks.values())
        self._tasks.clear()

    async def _probe_loop(self, node: NodeState) -> None:
        interval = self.settings.probe_interval_s
        next_deep = time.monotonic()
        while True:
            await self.probe(node)
            if self.settings.deep_probe_interval_s > 0 and node.healthy and time.monotonic() >= next_deep:
                await self.deep_probe(node)
                next_deep = time.monotonic() + self.settings.deep_probe_interval_s
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))

    async def probe(self, node: NodeState) -> None:
        started = time.perf_counter()
        ok, error = False, ""
        try:
            timeout = aiohttp.ClientTimeout(total=max(0.2, self.settings.probe_interval_s))
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
            if not node.healthy and node.good_probes >= self.settings.healthy_after:
                node.healthy = True
                log.info("node %s (%s %s) is healthy", node.url, node.spec.region, node.spec.color)
                self.nodes.changed()
        else:
            node.bad_probes, node.good_probes = node.bad_probes + 1, 0
            node.last_error = error
            if node.healthy and node.bad_probes >= self.settings.unhealthy_after:
                node.healthy = False
                log.warning("node %s is unhealthy: %s", node.url, error)
                self.nodes.changed()

    async def deep_probe(self, node: NodeState) -> None:
        """Score a known pair; a node that is up but answers it wrongly is taken out."""
        ok = False
        try:
            timeout = aiohttp.ClientTimeout(total=max(1.0, self.settings.probe_interval_s * 2))
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
            self.nodes.changed()
