"""Node heartbeats: each node registers itself in the store with a TTL and refreshes it.

A node that dies stops refreshing and disappears when its TTL lapses; a node that
drains removes itself at once. Gateways read the live set (``Heartbeats.live``) and
merge it with their static configuration (``merge_topology``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import msgspec

from shared.errors import StoreUnavailable
from shared.store import Store

__all__ = ["HeartbeatPublisher", "Heartbeats", "NodeHeartbeat", "TopologyNode", "merge_topology"]

log = logging.getLogger("geogate.heartbeats")


class NodeHeartbeat(msgspec.Struct, frozen=True):
    region: str
    color: str
    url: str
    model_version: str
    sha256: str
    started_at: str  # ISO 8601, UTC
    state: str = "ready"  # the node's own state: ready or draining


class Heartbeats:
    def __init__(self, store: Store, namespace: str = "geogate", ttl_s: float = 10.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._prefix = f"{namespace}:node:"
        self._decode = msgspec.json.Decoder(NodeHeartbeat).decode

    def key(self, beat: NodeHeartbeat) -> str:
        return f"{self._prefix}{beat.region}:{beat.color}:{beat.url}"

    async def beat(self, beat: NodeHeartbeat) -> None:
        await self.store.set(self.key(beat), msgspec.json.encode(beat), ttl_s=self.ttl_s)

    async def remove(self, beat: NodeHeartbeat) -> None:
        await self.store.delete(self.key(beat))

    async def live(self) -> list[NodeHeartbeat]:
        """Every node whose heartbeat has not lapsed, sorted by region, color, url."""
        out = []
        for key, raw in (await self.store.scan(self._prefix)).items():
            try:
                out.append(self._decode(raw))
            except msgspec.DecodeError:
                log.warning("ignoring an undecodable heartbeat at %s", key)
        return sorted(out, key=lambda b: (b.region, b.color, b.url))


class HeartbeatPublisher:
    """Refreshes one node's heartbeat every third of its TTL until stopped; a store that
    is down is retried on the next tick, never fatal to the node."""

    def __init__(self, heartbeats: Heartbeats, beat: NodeHeartbeat) -> None:
        self.heartbeats = heartbeats
        self.beat = beat
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    def update(self, beat: NodeHeartbeat) -> None:
        self.beat = beat

    async def _run(self) -> None:
        interval = self.heartbeats.ttl_s / 3
        while True:
            try:
                await self.heartbeats.beat(self.beat)
            except StoreUnavailable as exc:
                log.warning("heartbeat not published: %s", exc)
            await asyncio.sleep(interval)

    async def stop(self, *, deregister: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if deregister:
            with contextlib.suppress(StoreUnavailable):
                await self.heartbeats.remove(self.beat)


class TopologyNode(msgspec.Struct, frozen=True):
    region: str
    color: str
    url: str
    static: bool  # named in the configuration
    live: NodeHeartbeat | None  # its heartbeat, if one is current


def merge_topology(static: Iterable[tuple[str, str, str]], live: Iterable[NodeHeartbeat]) -> list[TopologyNode]:
    """Configured nodes ``(region, color, url)`` and live heartbeats, one entry per URL:
    a configured node without a heartbeat is listed (the gateway's health checks decide
    about it); a node that registered itself without being configured is added."""
    beats = {b.url.rstrip("/"): b for b in live}
    nodes = {}
    for region, color, url in static:
        key = url.rstrip("/")
        beat = beats.get(key)
        nodes[key] = TopologyNode(region, color, url, True, beat if beat and beat.region == region else None)
    for key, beat in beats.items():
        if key not in nodes:
            nodes[key] = TopologyNode(beat.region, beat.color, key, False, beat)
    return sorted(nodes.values(), key=lambda n: (n.region, n.color, n.url))
