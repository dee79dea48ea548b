"""Heartbeats: each node and each gateway registers itself in the store with a TTL and
refreshes it.

A process that dies stops refreshing and disappears when its TTL lapses; one that drains
removes itself at once. Gateways read the live nodes (``Heartbeats.live``) and merge them
with their static configuration (``merge_topology``); the admin API reads the live
gateways, whose heartbeats carry the registry epoch they apply (a switch waits for it)
and their recent traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import msgspec

from geogate.shared.errors import StoreUnavailable
from geogate.shared.lifecycle import cancel
from geogate.shared.store import Store

__all__ = ["GatewayHeartbeat", "HeartbeatPublisher", "Heartbeats", "NodeHeartbeat", "TopologyNode", "merge_topology"]

log = logging.getLogger("geogate.heartbeats")


class _Beat(msgspec.Struct, frozen=True):
    @property
    def key(self) -> str:  # unique per process within its kind
        raise NotImplementedError


class NodeHeartbeat(_Beat, frozen=True):
    region: str
    color: str
    url: str
    model_version: str
    sha256: str
    started_at: str  # ISO 8601, UTC
    state: str = "ready"  # the node's own state: ready or draining
    pid: int = 0  # lets a kill drill on the same host find it (geogate up)

    @property
    def key(self) -> str:
        return f"{self.region}:{self.color}:{self.url}"


class GatewayHeartbeat(_Beat, frozen=True):
    region: str
    url: str
    pid: int
    started_at: str  # ISO 8601, UTC
    epoch: int  # the registry epoch this gateway serves by
    stats: dict[str, Any] = {}  # recent traffic (gateway.stats snapshots), for status pages
    state: str = "serving"  # serving or draining

    @property
    def key(self) -> str:
        return f"{self.region}:{self.url}:{self.pid}"


B = TypeVar("B", bound=_Beat)


class Heartbeats(Generic[B]):
    """The live set of one kind of process (``node`` or ``gateway``)."""

    def __init__(self, store: Store, namespace: str = "geogate", ttl_s: float = 10.0, *,
                 kind: str = "node", struct: type[B] = NodeHeartbeat) -> None:  # type: ignore[assignment]
        self.store = store
        self.ttl_s = ttl_s
        self._prefix = f"{namespace}:{kind}:"
        self._decode: Callable[[bytes], B] = msgspec.json.Decoder(struct).decode

    @classmethod
    def gateways(cls, store: Store, namespace: str = "geogate", ttl_s: float = 6.0) -> Heartbeats[GatewayHeartbeat]:
        return Heartbeats(store, namespace, ttl_s, kind="gateway", struct=GatewayHeartbeat)

    def key(self, beat: B) -> str:
        return self._prefix + beat.key

    async def beat(self, beat: B) -> None:
        await self.store.set(self.key(beat), msgspec.json.encode(beat), ttl_s=self.ttl_s)

    async def remove(self, beat: B) -> None:
        await self.store.delete(self.key(beat))

    async def live(self) -> list[B]:
        """Every heartbeat that has not lapsed, sorted by key (region first)."""
        out = []
        for key, raw in (await self.store.scan(self._prefix)).items():
            try:
                out.append(self._decode(raw))
            except msgspec.DecodeError:
                log.warning("ignoring an undecodable heartbeat at %s", key)
        return sorted(out, key=lambda b: b.key)


class HeartbeatPublisher(Generic[B]):
    """Refreshes one heartbeat every third of its TTL until stopped, and at once after
    ``update(..., now=True)``; a store that is down is retried on the next tick, never
    fatal to the process."""

    def __init__(self, heartbeats: Heartbeats[B], beat: B, refresh: Callable[[], B] | None = None) -> None:
        self.heartbeats: Heartbeats[B] = heartbeats
        self.beat: B = beat
        self._refresh = refresh  # rebuilds the beat on every tick (a gateway's epoch and traffic)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    def update(self, beat: B | None = None, *, now: bool = False) -> None:
        if beat is not None:
            self.beat = beat
        if now:
            self._wake.set()

    async def _run(self) -> None:
        interval = self.heartbeats.ttl_s / 3
        while True:
            self._wake.clear()
            if self._refresh is not None:
                self.beat = self._refresh()
            try:
                await self.heartbeats.beat(self.beat)
            except StoreUnavailable as exc:
                log.warning("heartbeat not published: %s", exc)
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({woken}, timeout=interval)
            finally:
                woken.cancel()

    async def stop(self, *, deregister: bool = True) -> None:
        if self._task is not None:
            await cancel(self._task)  # also when the store call swallowed the first cancel
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
