"""Seed the version registry from what the deployed nodes report.

A fresh store has no registry record, and gateways serve nothing without one. Whoever
deploys (the local launcher, compose's ``registry-init`` service, the Kubernetes Job)
waits for the nodes, reads each one's color, model version and checksum from
``/health/ready``, and creates the record from those, so the registry names exactly the
weights that are running. An existing record is left alone: re-running is harmless.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import aiohttp
import msgspec

from geogate.shared.registry import ColorInfo, Registry, RegistryRecord

__all__ = ["BootstrapError", "NodeIdentity", "colors_of", "read_identities", "seed_registry"]


class BootstrapError(RuntimeError):
    """The nodes cannot seed a registry (not ready in time, or disagreeing)."""


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    url: str
    region: str
    color: str
    model_version: str
    checksum: str


class _Ready(msgspec.Struct):
    region: str
    color: str
    model_version: str
    checksum: str


def identity_from_ready(url: str, body: bytes) -> NodeIdentity:
    ready = msgspec.json.decode(body, type=_Ready)
    return NodeIdentity(url, ready.region, ready.color, ready.model_version, ready.checksum)


async def read_identities(urls: Sequence[str], *, wait_s: float, ssl_context: ssl.SSLContext | None = None,
                          on_wait: Callable[[list[str]], None] | None = None) -> list[NodeIdentity]:
    """Poll every node's ``/health/ready`` until all answer 200, within ``wait_s``."""
    found: dict[str, NodeIdentity] = {}
    deadline = time.monotonic() + wait_s
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=ssl_context or True)) as s:
        while True:
            for url in urls:
                if url in found:
                    continue
                try:
                    async with s.get(url.rstrip("/") + "/health/ready") as resp:
                        if resp.status == 200:
                            found[url] = identity_from_ready(url, await resp.read())
                except (aiohttp.ClientError, TimeoutError, msgspec.ValidationError, msgspec.DecodeError):
                    pass
            waiting = [u for u in urls if u not in found]
            if not waiting:
                return [found[u] for u in urls]
            if time.monotonic() > deadline:
                raise BootstrapError(f"not ready after {wait_s:.0f} s: {', '.join(waiting)}")
            if on_wait:
                on_wait(waiting)
            await asyncio.sleep(1.0)


def colors_of(identities: Iterable[NodeIdentity]) -> dict[str, ColorInfo]:
    """One version and checksum per color; nodes of one color that disagree are an error,
    because fencing would then reject some of them forever."""
    colors: dict[str, ColorInfo] = {}
    seen: dict[str, str] = {}
    for node in identities:
        info = ColorInfo(node.model_version, node.checksum)
        if node.color in colors and colors[node.color] != info:
            raise BootstrapError(
                f"color {node.color}: {seen[node.color]} serves {colors[node.color].model_version} "
                f"({colors[node.color].sha256[:12]}) but {node.url} serves {info.model_version} ({info.sha256[:12]})")
        colors.setdefault(node.color, info)
        seen.setdefault(node.color, node.url)
    return colors


async def seed_registry(registry: Registry, identities: Sequence[NodeIdentity], *, active: str,
                        regions: Sequence[str], who: str) -> tuple[RegistryRecord, bool]:
    """The record, and whether this call created it (``False``: one existed already)."""
    colors = colors_of(identities)
    if active not in colors:
        raise BootstrapError(f"no node serves the active color {active!r} (colors seen: {sorted(colors) or 'none'})")
    before = await registry.read()
    if before.epoch:
        return before, False
    record = await registry.initialize(colors, active, list(regions), who=who, why="seeded from the deployed nodes")
    return record, record.epoch == 1 and record.updated_by == who
