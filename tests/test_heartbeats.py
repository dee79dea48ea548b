"""Heartbeats: registration with a TTL, expiry, deregistration on drain, topology, the gateway roster."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis
from helpers import NodeProcess, RedisServer, wait_until

from geogate.gateway.control.roster import Roster
from geogate.shared.errors import StoreUnavailable
from geogate.shared.heartbeats import GatewayHeartbeat, HeartbeatPublisher, Heartbeats, NodeHeartbeat, merge_topology
from geogate.shared.store import MemoryStore, RedisStore


def beat(region: str = "cn-east", color: str = "blue", port: int = 9001) -> NodeHeartbeat:
    return NodeHeartbeat(region, color, f"http://127.0.0.1:{port}", "demo-v1-20261124", "a" * 64,
                         "2026-11-24T02:00:00+00:00")


async def test_heartbeats_live_expire_and_deregister() -> None:
    heartbeats = Heartbeats(MemoryStore(), ttl_s=0.2)
    a, b = beat(port=9001), beat("eu-central", "green", 9002)
    publisher = HeartbeatPublisher(heartbeats, a)
    publisher.start()
    await heartbeats.beat(b)  # published once, never refreshed

    async def only_a() -> bool:
        return await heartbeats.live() == [a]

    await wait_until(only_a, 5, "b's heartbeat to lapse while a's is refreshed")
    await publisher.stop(deregister=True)
    assert await heartbeats.live() == []


def test_topology_merges_configuration_with_heartbeats() -> None:
    configured = [("cn-east", "blue", "http://127.0.0.1:9001/"), ("cn-east", "green", "http://127.0.0.1:9003")]
    live = [beat(port=9001), beat("eu-central", "green", 9002)]
    nodes = merge_topology(configured, live)
    assert [(n.region, n.url, n.static, n.live is not None) for n in nodes] == [
        ("cn-east", "http://127.0.0.1:9001/", True, True),  # configured and alive
        ("cn-east", "http://127.0.0.1:9003", True, False),  # configured, no heartbeat (yet)
        ("eu-central", "http://127.0.0.1:9002", False, True),  # registered itself
    ]


async def test_a_node_registers_refreshes_and_leaves(tmp_path: Path, redis_server: RedisServer,
                                                     start_node: Callable[..., NodeProcess]) -> None:
    store = RedisStore(redis_server.url)
    heartbeats = Heartbeats(store)
    common = ["--registry-url", redis_server.url, "--heartbeat-ttl-s", "1.5", "--region", "eu-central"]
    drained = start_node(*common, "--color", "green")
    crashed = start_node(*common, "--color", "blue", "--advertise-url", "http://node-b.internal:8081")
    try:
        await drained.wait_ready()
        await crashed.wait_ready()

        async def both_registered() -> bool:
            return len(await heartbeats.live()) == 2

        await wait_until(both_registered, 30, "both nodes to register")
        async with aiohttp.ClientSession() as http:
            _, info = await drained.get(http, "/info")
        by_color = {b.color: b for b in await heartbeats.live()}
        green = by_color["green"]
        assert (green.region, green.url, green.state) == ("eu-central", drained.url, "ready")
        assert (green.model_version, green.sha256) == (info["model_version"], info["checksum"])
        assert by_color["blue"].url == "http://node-b.internal:8081"

        # Refreshed: the key's remaining lifetime goes back up.
        client = redis.Redis.from_url(redis_server.url)
        key = heartbeats.key(green)
        lowest = await client.pttl(key)

        async def refreshed() -> bool:
            nonlocal lowest
            now = await client.pttl(key)
            if now > lowest:
                return True
            lowest = now
            return False

        await wait_until(refreshed, 10, "the heartbeat to be refreshed")
        await client.aclose()

        crashed.proc.send_signal(signal.SIGKILL)  # no goodbye: the TTL removes it
        drained.signal(signal.SIGTERM)  # deregisters before draining

        async def only_none_left() -> bool:
            return await heartbeats.live() == []

        await wait_until(only_none_left, 15, "both heartbeats to disappear")
        assert drained.wait_exit(30) == 0
    finally:
        await store.close()



async def test_the_gateway_roster_outlives_a_redis_that_comes_back_empty(tmp_path: Path) -> None:
    """After Redis restarts empty, a live gateway is missing from the store until its next
    beat; a switch waiting for acknowledgements must still count it (found by the chaos
    scenario redis-mid-switch: the rollback was answered while one gateway served the old
    color for 3 s more)."""
    server = RedisServer(tmp_path)
    store = RedisStore(server.url)
    now = [1000.0]
    roster = Roster(Heartbeats.gateways(store, ttl_s=6.0), clock=lambda: now[0])
    a, b = (GatewayHeartbeat("eu-central", f"http://127.0.0.1:{port}", port, "2026-11-24T02:00:00+00:00", 7)
            for port in (8001, 8002))
    try:
        for gateway in (a, b):
            await roster.heartbeats.beat(gateway)
        assert await roster.read() == ([a, b], [])
        server.kill()
        with pytest.raises(StoreUnavailable):
            await roster.read()
        now[0] += 100  # an outage far longer than the TTL forgets no one
        server.restart()  # empty
        await wait_until(lambda: server.answers(), 30, "redis to answer again")

        async def readable() -> bool:
            try:
                await roster.heartbeats.beat(b)  # b beats again; a has not yet
                return True
            except StoreUnavailable:
                return False

        await wait_until(readable, 30, "the store to take writes again")
        assert await roster.read() == ([b], [a])
        now[0] += 5.9
        assert await roster.read() == ([b], [a])  # still within a TTL of reads without it
        now[0] += 0.2
        assert await roster.read() == ([b], [])  # absent for a whole TTL: stopped or dead
        await roster.heartbeats.beat(a)
        assert await roster.read() == ([a, b], [])
    finally:
        await store.close()
        server.stop()
