"""Readiness, batching, back-pressure, deadlines, drain and model identity, on real node
processes. Fault holds (a file the node waits for) let a test decide exactly when the
node may load or compute, so nothing here depends on timing."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
from helpers import NodeProcess, scrape, wait_until

PAIR = ["杭州市文一西路969号", "杭州文一西路969号"]


async def _post(http: aiohttp.ClientSession, node: NodeProcess, n_pairs: int = 1,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    async with http.post(node.url + "/v1/similarity", json={"pairs": [PAIR] * n_pairs}, headers=headers) as resp:
        return resp.status, await resp.json()


async def _queue_depth(http: aiohttp.ClientSession, node: NodeProcess) -> int:
    m = await scrape(http, node.url)
    return int(m.get('geogate_node_queue_depth{task="similarity"}', 0))


async def test_ready_only_after_load_and_warm_up(
    start_node: Callable[..., NodeProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    go = tmp_path / "load"
    node = start_node("--fault-hold-load-file", str(go))
    await node.wait_status("/health/live", 200)
    status, body = await node.get(http, "/health/ready")
    assert status == 503 and body["status"] == "loading" and body["model_version"] is None
    status, body = await _post(http, node)
    assert status == 503 and body["error"]["code"] == "unavailable"  # type: ignore[index]
    go.touch()
    await node.wait_ready()
    status, body = await node.get(http, "/health/ready")
    assert body["status"] == "ready" and body["model_version"]
    assert (await _post(http, node))[0] == 200


async def test_concurrent_calls_share_a_forward_pass(
    start_node: Callable[..., NodeProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    go = tmp_path / "compute"
    node = start_node("--fault-hold-inference-file", str(go), "--max-batch-size", "64", "--max-wait-ms", "10")
    await node.wait_ready()
    first = asyncio.create_task(_post(http, node))
    await wait_until(lambda: _in_flight(http, node, 1), 30, "first call on the device")
    calls = [asyncio.create_task(_post(http, node)) for _ in range(24)]
    await wait_until(lambda: _received(http, node, 25), 30, "all calls received")
    go.touch()
    statuses = [s for s, _ in await asyncio.gather(first, *calls)]
    assert statuses == [200] * 25
    m = await scrape(http, node.url)
    batches = m['geogate_node_batch_size_count{task="similarity"}']
    assert m['geogate_node_batch_size_sum{task="similarity"}'] == 25
    # One pass held the first call; the other 24 arrived meanwhile and left in at most two.
    assert batches <= 3, f"25 concurrent calls took {batches} forward passes"


async def test_full_queue_answers_429_and_recovers(
    start_node: Callable[..., NodeProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    go = tmp_path / "compute"
    node = start_node("--fault-hold-inference-file", str(go), "--max-batch-size", "2", "--max-queue", "4",
                      "--max-wait-ms", "0")
    await node.wait_ready()
    held = [asyncio.create_task(_post(http, node, 2)) for _ in range(2)]  # device + pipeline slot
    await wait_until(lambda: _in_flight(http, node, 4), 30, "two batches in flight")
    queued = [asyncio.create_task(_post(http, node, 2)) for _ in range(2)]
    await wait_until(lambda: _depth_is(http, node, 4), 30, "queue full")
    status, body = await _post(http, node, 1)
    assert status == 429 and body["error"]["code"] == "overloaded"  # type: ignore[index]
    async with http.post(node.url + "/v1/similarity", json={"pairs": [PAIR]}) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    go.touch()
    assert [s for s, _ in await asyncio.gather(*held, *queued)] == [200] * 4
    m = await scrape(http, node.url)
    assert m['geogate_node_dropped_items_total{reason="queue_full",task="similarity"}'] == 2
    assert (await _post(http, node))[0] == 200


async def test_expired_deadline_is_dropped_before_compute(
    start_node: Callable[..., NodeProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    go = tmp_path / "compute"
    node = start_node("--fault-hold-inference-file", str(go), "--max-batch-size", "1", "--max-wait-ms", "0")
    await node.wait_ready()
    held = [asyncio.create_task(_post(http, node)) for _ in range(2)]  # device + pipeline slot
    await wait_until(lambda: _in_flight(http, node, 2), 30, "two batches in flight")
    status, body = await _post(http, node, 3, headers={"X-Deadline-Ms": "150"})
    assert status == 504 and body["error"]["code"] == "deadline_exceeded"  # type: ignore[index]
    go.touch()
    assert [s for s, _ in await asyncio.gather(*held)] == [200, 200]
    assert (await _post(http, node))[0] == 200
    m = await scrape(http, node.url)
    assert m['geogate_node_items_total{task="similarity"}'] == 3  # the 3 expired pairs never ran
    dropped = sum(v for k, v in m.items() if k.startswith("geogate_node_dropped_items_total"))
    assert dropped == 3


async def test_sigterm_drains_accepted_work_then_exits(
    start_node: Callable[..., NodeProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    go = tmp_path / "compute"
    node = start_node("--fault-hold-inference-file", str(go), "--max-batch-size", "1", "--max-wait-ms", "0")
    await node.wait_ready()
    accepted = [asyncio.create_task(_post(http, node)) for _ in range(5)]
    await wait_until(lambda: _depth_is(http, node, 3), 30, "three calls queued behind two in flight")
    node.signal(signal.SIGTERM)
    await node.wait_status("/health/ready", 503, timeout=30)
    status, body = await _post(http, node)
    assert status == 503 and body["error"]["code"] == "unavailable"  # type: ignore[index]
    go.touch()
    assert [s for s, _ in await asyncio.gather(*accepted)] == [200] * 5
    assert await asyncio.to_thread(node.wait_exit, 60) == 0


async def test_expect_sha256_refuses_other_weights(
    start_node: Callable[..., NodeProcess], http: aiohttp.ClientSession
) -> None:
    wrong = start_node("--expect-sha256", "0" * 64)
    assert await asyncio.to_thread(wrong.wait_exit, 120) == 3
    assert "differs from --expect-sha256" in wrong.log()
    right = start_node()
    await right.wait_ready()
    _, info = await right.get(http, "/info")
    again = start_node("--expect-sha256", str(info["checksum"]).upper())
    await again.wait_ready()


# -- polled conditions -----------------------------------------------------------------

async def _depth_is(http: aiohttp.ClientSession, node: NodeProcess, n: int) -> bool:
    return await _queue_depth(http, node) == n


async def _received(http: aiohttp.ClientSession, node: NodeProcess, n: int) -> bool:
    """Calls that reached the batcher: queued, or taken into a batch."""
    m = await scrape(http, node.url)
    return m.get('geogate_node_queue_depth{task="similarity"}', 0) + _taken(m) >= n


async def _in_flight(http: aiohttp.ClientSession, node: NodeProcess, items: int) -> bool:
    """``items`` are in batches (on the device or being prepared), none queued."""
    m = await scrape(http, node.url)
    return _taken(m) == items and m.get('geogate_node_queue_depth{task="similarity"}', 0) == 0


def _taken(m: dict[str, float]) -> float:
    return m.get('geogate_node_in_flight_items{task="similarity"}', 0)
