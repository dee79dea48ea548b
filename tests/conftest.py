"""Fixtures: node processes started per test or per module, and an HTTP session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import hypothesis  # noqa: F401  (see below)
import pytest
from helpers import NodeProcess, RedisServer

from geogate.shared.store import MemoryStore, RedisStore, Store

# hypothesis' pytest plugin imports hypothesis in the terminal summary when no test did;
# pytest's assertion rewriting then parses it deep inside pluggy's hooks, where CPython
# 3.11.7's parser fails ("AST constructor recursion depth mismatch") and a run of only
# hypothesis-free tests ends in a SystemError. Importing it here, at the top, avoids that.


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    nodes: list[NodeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> NodeProcess:
        node = NodeProcess(tmp_path, *args, env=env)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="module")
def demo_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One demo-model node shared by a module's read-only tests (startup costs seconds)."""
    node = NodeProcess(
        tmp_path_factory.mktemp("demo-node"), "--region", "cn-east", "--color", "green", "--max-batch", "32",
        "--max-chars", "64", "--max-body-bytes", "4096",
    )
    asyncio.run(node.wait_ready())
    yield node
    node.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session




@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for one test (it may kill and restart it)."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each test that takes ``store`` runs twice: on the embedded store and on a real,
    private redis-server, so the two implementations cannot drift."""
    if request.param == "memory":
        yield MemoryStore()
        return
    server = RedisServer(tmp_path)
    # 2 s, not the 0.5 s fail-fast default: 20 connects at once on a loaded 2-core machine can take longer
    redis_store = RedisStore(server.url, timeout_s=2.0)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        server.stop()
