"""The versioned result cache, on the embedded store and on real Redis (a replica too)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as redis
from helpers import RedisServer, wait_until

from geogate.gateway.dataplane.cache import ResultCache, normalize
from geogate.shared.schemas import Element, ParseResult, SimilarityResult
from geogate.shared.store import MemoryStore, RedisStore, Store

V1, V2 = "mgeo_demo_tiny-synth_v1-20261124T0144Z", "mgeo_demo_tiny-synth_v2-20261124T0200Z"
Pair = tuple[str, str]


class Model:
    """Stands in for the upstream node call: counts what it is asked to compute."""

    def __init__(self) -> None:
        self.calls: list[list[Pair]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, pairs: list[Pair]) -> list[SimilarityResult]:
        self.calls.append(pairs)
        await self.release.wait()
        return [SimilarityResult(score=len(a) / 100, label="exact_match") for a, _ in pairs]


def pairs(n: int, tag: str = "") -> list[Pair]:
    return [(f"杭州市文一西路{i}号{tag}", f"杭州文一西路{i}号") for i in range(n)]


def test_keys_normalize_similarity_inputs_and_separate_versions() -> None:
    cache = ResultCache.for_similarity(MemoryStore())
    assert normalize("  浙江省\u3000杭州市 \t 文一西路９６９号 ") == "浙江省 杭州市 文一西路969号"
    a = ("浙江省 杭州市", "文一西路９６９号")
    assert cache.key(V1, a) == cache.key(V1, ("浙江省　杭州市", "文一西路969号"))
    assert cache.key(V1, a) != cache.key(V2, a)  # versions never share results
    assert cache.key(V1, a) != cache.key(V1, (a[1], a[0]))  # the order of a pair counts
    assert cache.key(V1, ("a b", "c")) != cache.key(V1, ("a", "b c"))  # the separator is not text
    parse = ResultCache.for_parse(MemoryStore())
    # parse results carry offsets into the caller's text: no normalization there
    assert parse.key(V1, "杭州市 文一西路") != parse.key(V1, "杭州市文一西路")
    assert cache.key(V1, a).startswith(f"geogate:cache:similarity:{V1}:")


async def test_misses_are_computed_once_then_hit(store: Store) -> None:
    cache = ResultCache.for_similarity(store)
    model = Model()
    first = await cache.lookup(V1, pairs(5), model)
    assert (first.status, first.hits, len(model.calls[0])) == ("miss", 0, 5)
    second = await cache.lookup(V1, pairs(5), model)
    assert (second.status, second.results, len(model.calls)) == ("hit", first.results, 1)
    mixed = await cache.lookup(V1, pairs(7), model)  # 5 cached, 2 new
    assert (mixed.status, mixed.hits, model.calls[-1]) == ("partial", 5, pairs(7)[5:])
    assert mixed.results[:5] == first.results
    assert (cache.stats.hits, cache.stats.misses) == (10, 7)


async def test_results_of_one_version_are_never_served_for_another(store: Store) -> None:
    cache = ResultCache.for_similarity(store)
    model = Model()
    await cache.lookup(V1, pairs(3), model)
    other = await cache.lookup(V2, pairs(3), model)
    assert other.status == "miss" and len(model.calls) == 2


async def test_duplicates_within_a_batch_are_computed_once(store: Store) -> None:
    cache = ResultCache.for_similarity(store)
    model = Model()
    batch = [pairs(1)[0], pairs(2)[1], pairs(1)[0], ("杭州市文一西路0号", "杭州文一西路0号")]
    result = await cache.lookup(V1, batch, model)
    assert model.calls == [[batch[0], batch[1]]]
    assert result.results[0] == result.results[2] == result.results[3]


async def test_identical_concurrent_misses_are_coalesced(store: Store) -> None:
    cache = ResultCache.for_similarity(store)
    model = Model()
    model.release.clear()
    first = asyncio.create_task(cache.lookup(V1, pairs(4), model))
    await wait_until(lambda: len(model.calls) == 1, 5, "the first call to reach the model")
    second = asyncio.create_task(cache.lookup(V1, pairs(6), model))  # 4 already on their way
    await wait_until(lambda: len(model.calls) == 2, 5, "the second call to reach the model")
    model.release.set()
    a, b = await asyncio.gather(first, second)
    assert model.calls[1] == pairs(6)[4:]  # only the two the first call was not computing
    assert b.results[:4] == a.results and cache.stats.coalesced == 4
    assert not cache._inflight


async def test_a_failed_computation_fails_its_waiters_and_is_not_cached(store: Store) -> None:
    cache = ResultCache.for_similarity(store)
    gate = asyncio.Event()

    async def broken(items: list[Pair]) -> list[SimilarityResult]:
        await gate.wait()
        raise RuntimeError("node said 500")

    first = asyncio.create_task(cache.lookup(V1, pairs(2), broken))
    await wait_until(lambda: len(cache._inflight) == 2, 5, "the first call to register its misses")
    second = asyncio.create_task(cache.lookup(V1, pairs(2), broken))
    await wait_until(lambda: cache.stats.coalesced == 2, 5, "the second call to wait on the first")
    gate.set()
    for task in (first, second):
        with pytest.raises(RuntimeError, match="node said 500"):
            await task
    assert await cache.get_many(V1, pairs(2)) == [None, None] and not cache._inflight


async def test_a_refused_charge_is_the_callers_alone(store: Store) -> None:
    """A client over its item limit is refused before its misses are registered, so a
    call of another client waiting on the same misses never gets that refusal (and a
    call that waits on another's computation is charged for its misses all the same)."""
    cache = ResultCache.for_similarity(store)
    model = Model()
    model.release.clear()
    charged: list[int] = []

    async def pays(misses: int) -> None:
        charged.append(misses)

    async def refused(misses: int) -> None:
        raise PermissionError("over its item limit")

    first = asyncio.create_task(cache.lookup(V1, pairs(3), model, pays))
    await wait_until(lambda: len(model.calls) == 1, 5, "the first call to reach the model")
    with pytest.raises(PermissionError):
        await cache.lookup(V1, pairs(3), model, refused)
    waiter = asyncio.create_task(cache.lookup(V1, pairs(3), model, pays))
    await wait_until(lambda: cache.stats.coalesced == 3, 5, "the third call to wait on the first")
    model.release.set()
    a, c = await asyncio.gather(first, waiter)
    assert a.results == c.results and len(model.calls) == 1
    assert charged == [3, 3] and not cache._inflight


async def test_values_over_the_size_cap_are_not_cached(store: Store) -> None:
    cache = ResultCache.for_parse(store, max_value_bytes=200)
    text = "浙江省杭州市余杭区文一西路969号"
    small = ParseResult(elements=[Element(type="prov", text="浙江省", start=0, end=3)])
    big = ParseResult(elements=[Element(type="poi", text="x" * 300, start=0, end=300)])
    await cache.put_many(V1, [text, "other"], [small, big])
    assert await cache.get_many(V1, [text, "other"]) == [small, None]
    assert cache.stats.too_large == 1


async def test_a_dead_store_degrades_to_misses(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    store = RedisStore(server.url)
    cache = ResultCache.for_similarity(store, local_items=0)
    model = Model()
    try:
        await cache.lookup(V1, pairs(3), model)
        server.kill()
        result = await cache.lookup(V1, pairs(3), model)  # no exception: computed again
        assert result.status == "miss" and len(model.calls) == 2 and len(result.results) == 3
        assert cache.stats.store_errors >= 1
    finally:
        await store.close()
        server.stop()


async def _commands(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_batch_is_one_mget_and_one_pipeline_on_redis(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    cache = ResultCache.for_similarity(store, local_items=0)
    try:
        await cache.lookup(V1, pairs(64), Model())
        await cache.lookup(V1, pairs(64), Model())
        calls = await _commands(redis_server.url)
        assert calls.get("mget") == 2 and "get" not in calls
        assert calls.get("set") == 64  # the misses of the first call, pipelined
    finally:
        await store.close()


async def test_reads_from_a_replica_writes_to_the_primary(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path)
    replica = RedisServer(tmp_path, replica_of=primary)
    store = RedisStore(primary.url, read_url=replica.url)
    cache = ResultCache.for_similarity(store, local_items=0)
    model = Model()
    try:
        await cache.lookup(V1, pairs(8), model)  # misses: read on the replica, written to the primary

        async def replicated() -> bool:
            return None not in await cache.get_many(V1, pairs(8))

        await wait_until(replicated, 20, "the replica to receive the primary's writes")
        assert (await cache.lookup(V1, pairs(8), model)).status == "hit" and len(model.calls) == 1
        on_primary, on_replica = await _commands(primary.url), await _commands(replica.url)
        assert "mget" not in on_primary and on_replica.get("mget", 0) >= 3
        assert on_primary.get("set") == 8 and "set" not in on_replica
    finally:
        await store.close()
        replica.stop()
        primary.stop()



async def test_hot_items_are_served_from_the_local_lru_without_a_round_trip(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    mine = ResultCache.for_similarity(store, local_items=10)
    other_gateway = ResultCache.for_similarity(store, local_items=10)
    model = Model()
    try:
        first = await mine.lookup(V1, pairs(4), model)
        mgets = (await _commands(redis_server.url)).get("mget", 0)
        again = await mine.lookup(V1, pairs(4), model)
        assert again.status == "hit" and again.results == first.results
        assert (await _commands(redis_server.url)).get("mget", 0) == mgets  # not even one MGET
        shared = await other_gateway.lookup(V1, pairs(4), model)  # another gateway: from Redis
        assert shared.status == "hit" and len(model.calls) == 1
        assert await mine.get_many(V2, pairs(4)) == [None] * 4  # the LRU keys carry the version too
        await mine.lookup(V1, pairs(30, "more"), model)
        assert len(mine._local) == 10  # bounded
    finally:
        await store.close()
