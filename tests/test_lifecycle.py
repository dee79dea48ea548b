"""Start-up / serve / shutdown: whatever started is stopped, also when start-up fails
half way. Each start-up step of the gateway and of the node is made to fail, once
before it runs and once after it has started what it starts; the process's serve() must
raise that error and leave nothing behind: no task, no socket (the listener, the
node probes, the Redis connections), no heartbeat in the store, a free port. The
gateway runs against a real redis-server; the failure is injected by replacing the step,
the only stand-in here."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as redis
from helpers import RedisServer, free_port, wait_until

from geogate.gateway.config import GatewayConfig, GeoSettings, HealthSettings, StoreSettings
from geogate.gateway.launcher.plan import TEST_GEOIP_DB
from geogate.gateway.routing.topology import NodeSpec, Topology
from geogate.gateway.server import GatewayServer
from geogate.node.config import NodeConfig
from geogate.node.server import NodeServer
from geogate.shared.lifecycle import Service

GATEWAY_STEPS = [name for name, _ in GatewayServer(GatewayConfig(), Topology()).steps()]
NODE_STEPS = [name for name, _ in NodeServer(NodeConfig()).steps()]


class Injected(RuntimeError):
    """The failure a test puts into a start-up step."""


def open_files() -> list[str]:
    """What this process holds open: sockets, files (a GeoIP database), pipes."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sorted(out)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def fail_at(service: Service, step: str, when: str) -> None:
    """Make ``step`` raise, ``before`` it runs or ``after`` it has run."""
    steps = service.steps()

    def replaced() -> list[tuple[str, Callable[..., object]]]:
        out: list[tuple[str, Callable[..., object]]] = []
        for name, run in steps:
            if name == step:
                async def failing(stack: contextlib.AsyncExitStack, run: Callable[..., object] = run) -> None:
                    if when == "after":
                        await run(stack)  # type: ignore[misc]
                    raise Injected(f"{when} {step}")
                out.append((name, failing))
            else:
                out.append((name, run))
        return out

    service.steps = replaced  # type: ignore[method-assign,assignment]


async def nothing_left(files_before: list[str], port: int, server: Service) -> None:
    current = asyncio.current_task()
    await wait_until(lambda: not [t for t in asyncio.all_tasks() if t is not current], 10, "every task to end")
    await wait_until(lambda: len(open_files()) <= len(files_before), 10,
                     f"every socket and file to close (before: {files_before})")
    assert port_is_free(port)
    session = getattr(server, "session", None)
    assert session is None or session.closed


def test_the_steps_are_named() -> None:
    assert GATEWAY_STEPS == ["stores", "registry", "clients", "nodes", "data plane", "heartbeat", "control plane",
                             "listeners", "announce"]
    assert NODE_STEPS == ["service", "listener", "model"]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", GATEWAY_STEPS)
async def test_a_gateway_that_fails_to_start_stops_what_it_started(redis_server: RedisServer, tmp_path: Path,
                                                                    step: str, when: str) -> None:
    probe_target = free_port()  # a node that is not there: its probe loop must end too
    port = free_port()
    config = GatewayConfig(region="eu-central", port=port, health=HealthSettings(probe_interval_s=0.2),
                           store=StoreSettings(registry_url=redis_server.url),
                           geo=GeoSettings(geoip_db=str(TEST_GEOIP_DB)))
    topology = Topology(nodes=(NodeSpec("eu-central", "blue", f"http://127.0.0.1:{probe_target}"),))
    files_before = open_files()
    server = GatewayServer(config, topology)
    fail_at(server, step, when)
    with pytest.raises(Injected):
        await server.serve(handle_signals=False)
    await nothing_left(files_before, port, server)
    check = redis.Redis.from_url(redis_server.url)
    try:
        assert await check.keys("geogate:gateway:*") == []  # no heartbeat left behind
        clients = await check.client_list()
        assert len(clients) == 1, clients  # only this check's own connection
    finally:
        await check.aclose()


async def test_a_gateway_that_started_stops_the_same_way(redis_server: RedisServer) -> None:
    """The control case: a full start, then a stop, leaves the same nothing."""
    port = free_port()
    config = GatewayConfig(region="eu-central", port=port, store=StoreSettings(registry_url=redis_server.url))
    files_before = open_files()
    server = GatewayServer(config, Topology())
    serving = asyncio.create_task(server.serve(handle_signals=False))
    check = redis.Redis.from_url(redis_server.url)
    try:
        await wait_until(lambda: check.keys("geogate:gateway:*"), 10, "the gateway's heartbeat")
        assert not port_is_free(port)
        server.should_exit.set()
        assert await serving == 0
        assert await check.keys("geogate:gateway:*") == []  # deregistered on the way out
    finally:
        await check.aclose()
    await nothing_left(files_before, port, server)


# Not after "model": the model would then load on a thread this test process cannot take
# back; tests/test_node_lifecycle.py stops real nodes while they load.
@pytest.mark.parametrize(("step", "when"), [(s, w) for s in NODE_STEPS for w in ("before", "after")
                                            if (s, w) != ("model", "after")])
async def test_a_node_that_fails_to_start_stops_what_it_started(step: str, when: str) -> None:
    port = free_port()
    files_before = open_files()
    server = NodeServer(NodeConfig(port=port, model="demo"))
    fail_at(server, step, when)
    with pytest.raises(Injected):
        await server.serve(handle_signals=False)
    await nothing_left(files_before, port, server)
