"""The limiter's leases on a store with a made-up clock: several gateways never spend
more than the shared bucket handed out, a quiet client loses nothing to leases, and a
busy one asks the store for a small fraction of its calls. (tests/test_access.py runs
the same limits through real gateways and Redis.)"""

from __future__ import annotations

import asyncio

import pytest
from helpers import RedisServer

from geogate.gateway.access.limits import Limiter, RateLimited
from geogate.gateway.ops.metrics import GatewayMetrics
from geogate.shared.clients import Limits
from geogate.shared.store import MemoryStore, RedisStore, Taken


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.takes = 0

    async def take(self, key: str, rate: int, burst: int, want: int, need: int, ttl_s: float) -> Taken:
        self.takes += 1
        return await super().take(key, rate, burst, want, need, ttl_s)


async def call(limiter: Limiter, limits: Limits, items: float) -> None:
    """One call of client "c" with ``items`` items, as the gateway makes it."""
    buckets, pending = limiter.admit("c", limits)
    if pending is not None:
        await pending
    pending = limiter.charge("c", buckets, items)
    if pending is not None:
        await pending


async def _admitted(limiter: Limiter, limits: Limits) -> bool:
    try:
        _, pending = limiter.admit("c", limits)
        if pending is not None:
            await pending
    except RateLimited:
        return False
    await asyncio.sleep(0)  # let a background top-up run, as the event loop would between calls
    return True


async def test_three_gateways_never_spend_more_than_the_shared_bucket_handed_out() -> None:
    clock = Clock()
    store = CountingStore(clock)
    gateways = [Limiter(store, "t", GatewayMetrics(), clock=clock) for _ in range(3)]
    limits = Limits(rps=50, burst=20)
    allowed = 0
    for i in range(3000):  # 3,000 calls over 10 s: 300 a second offered, 50 allowed
        clock.now += 1 / 300
        allowed += await _admitted(gateways[i % 3], limits)
    elapsed = 3000 / 300
    assert allowed <= 50 * elapsed + 20
    assert allowed >= 0.9 * 50 * elapsed  # leases dropped unused cost little


async def test_a_client_hammering_far_over_its_limit_is_refused_without_asking_the_store() -> None:
    clock = Clock()
    store = CountingStore(clock)
    limiter = Limiter(store, "t", GatewayMetrics(), clock=clock)
    limits = Limits(rps=1, burst=1)
    allowed = 0
    for _ in range(1000):  # 1,000 calls in one second
        clock.now += 0.001
        allowed += await _admitted(limiter, limits)
    assert allowed == 1  # the burst; the next token comes a second after the first take
    assert store.takes <= 3  # refused here until the store said a token comes back


async def test_a_busy_client_asks_the_store_for_a_small_fraction_of_its_calls() -> None:
    clock = Clock()
    store = CountingStore(clock)
    limiter = Limiter(store, "t", GatewayMetrics(), clock=clock)
    limits = Limits(rps=100_000, burst=100_000, items_per_s=1e6, items_burst=1e6, daily_quota=1e9)
    for _ in range(5000):  # 5,000 calls a second
        clock.now += 1 / 5000
        await call(limiter, limits, 3)
        await asyncio.sleep(0)
    assert store.takes < 5000 * 3 * 0.05, store.takes  # three buckets, under one take in twenty calls each


async def test_a_quiet_client_loses_none_of_its_quota_to_leases() -> None:
    clock = Clock()
    limiter = Limiter(MemoryStore(clock), "t", GatewayMetrics(), clock=clock)
    limits = Limits(daily_quota=10)
    for _ in range(10):  # one item every five seconds: each lease would have expired
        clock.now += 5
        await call(limiter, limits, 1)
        await asyncio.sleep(0)
    with pytest.raises(RateLimited) as refused:
        await call(limiter, limits, 1)
    assert refused.value.verdict is not None and refused.value.verdict.scope == "daily-quota"
    assert refused.value.verdict.remaining == 0


async def test_concurrent_calls_share_one_take_from_the_store() -> None:
    clock = Clock()
    store = CountingStore(clock)
    limiter = Limiter(store, "t", GatewayMetrics(), clock=clock)
    limits = Limits(rps=1000, burst=1000)
    results = await asyncio.gather(*(_admitted(limiter, limits) for _ in range(50)), return_exceptions=True)
    assert all(r is True for r in results)
    assert store.takes <= 50  # not one take per waiting call plus one per refill


async def test_calls_racing_for_one_lease_are_never_refused_while_the_bucket_has_plenty(
        redis_server: RedisServer) -> None:
    """Found by the benchmark, on a real Redis: a call whose own take from the store was
    spent by calls that ran first was refused (429) although the shared bucket was full."""
    store = RedisStore(redis_server.url)
    limiter = Limiter(store, "t", GatewayMetrics())
    limits = Limits(rps=1e6, burst=1e6, items_per_s=1e7, items_burst=1e7, daily_quota=1e9)

    async def caller() -> None:
        for _ in range(300):
            await call(limiter, limits, 1)
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(caller() for _ in range(32)))  # raises RateLimited if any call is refused
    finally:
        await store.close()
