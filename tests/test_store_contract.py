"""One contract, two stores: every test here runs against the embedded MemoryStore and
against a RedisStore on a real, private redis-server, so the two cannot drift."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import RedisSentinel, RedisServer, wait_until

from geogate.shared.errors import Conflict, StoreUnavailable
from geogate.shared.store import MemoryStore, RedisStore, Store, open_store, open_stores


async def test_get_set_mget_delete(store: Store) -> None:
    assert await store.get("k1") is None
    await store.set("k1", b"one")
    await store.set_many([("k2", b"two"), ("k3", b"\x00\xffbinary")])
    assert await store.get("k1") == b"one"
    assert await store.mget(["k1", "missing", "k3", "k2"]) == [b"one", None, b"\x00\xffbinary", b"two"]
    assert await store.mget([]) == []
    await store.delete("k1")
    await store.delete("never-there")
    assert await store.get("k1") is None


async def test_ttl_expires(store: Store) -> None:
    await store.set("short", b"x", ttl_s=0.05)
    await store.set_many([("short2", b"y")], ttl_s=0.05)
    await store.set("long", b"z", ttl_s=60)
    assert await store.get("short") == b"x"

    async def gone() -> bool:
        return await store.mget(["short", "short2"]) == [None, None]

    await wait_until(gone, 5, "keys with a 50 ms TTL to expire")
    assert await store.get("long") == b"z"


async def test_scan_by_prefix(store: Store) -> None:
    await store.set("geogate:node:a", b"1")
    await store.set("geogate:node:b", b"2", ttl_s=60)
    await store.set("geogate:nodes", b"not under the prefix")
    await store.set("other:node:c", b"3")
    await store.set("geogate:node:*", b"a literal star")  # glob characters are matched literally
    assert await store.scan("geogate:node:") == {
        "geogate:node:a": b"1", "geogate:node:b": b"2", "geogate:node:*": b"a literal star",
    }
    assert await store.scan("geogate:node:*") == {"geogate:node:*": b"a literal star"}


async def test_compare_and_set_bumps_the_counter_and_refuses_stale_writers(store: Store) -> None:
    assert await store.counter("reg") == 0
    assert await store.compare_and_set("reg", 0, b"v1") == 1
    assert await store.compare_and_set("reg", 1, b"v2") == 2
    with pytest.raises(Conflict) as info:
        await store.compare_and_set("reg", 1, b"stale")
    assert info.value.current == 2 and info.value.status == 409
    assert await store.get("reg") == b"v2"
    assert await store.counter("reg") == 2


async def test_concurrent_writers_exactly_one_wins_each_epoch(store: Store) -> None:
    async def writer(i: int) -> bool:
        try:
            await store.compare_and_set("reg", 0, f"writer-{i}".encode())
            return True
        except Conflict:
            return False

    wins = await asyncio.gather(*(writer(i) for i in range(20)))
    assert sum(wins) == 1
    winner = wins.index(True)
    assert await store.get("reg") == f"writer-{winner}".encode()
    assert await store.counter("reg") == 1


async def test_compare_and_set_publishes_and_audits_atomically(store: Store) -> None:
    async with store.subscribe("changes") as messages:
        await store.compare_and_set(
            "reg", 0, b"record-1", channel="changes", audit_stream="audit",
            audit={"who": b"alice", "why": b"first"}, audit_maxlen=100,
        )
        assert await asyncio.wait_for(anext(messages), 5) == b"record-1"
        with pytest.raises(Conflict):
            await store.compare_and_set("reg", 0, b"lost", channel="changes", audit_stream="audit",
                                        audit={"who": b"bob", "why": b"late"})
        await store.compare_and_set("reg", 1, b"record-2", channel="changes", audit_stream="audit",
                                    audit={"who": b"carol", "why": b"second"})
        assert await asyncio.wait_for(anext(messages), 5) == b"record-2"  # not b"lost"
    entries = await store.xrevrange("audit", 10)
    assert [e.fields["who"] for e in entries] == [b"carol", b"alice"]  # the loser left no entry
    assert entries[0].id > entries[1].id or len(entries[0].id) > len(entries[1].id)


async def test_streams_are_capped_and_read_newest_first(store: Store) -> None:
    ids = [await store.xadd("s", {"n": str(i).encode()}, maxlen=5) for i in range(200)]
    assert len(set(ids)) == 200
    newest = await store.xrevrange("s", 3)
    assert [e.fields["n"] for e in newest] == [b"199", b"198", b"197"]
    everything = await store.xrevrange("s", 1000)
    # Redis trims approximately (whole macro-nodes), so allow some slack above the cap.
    assert 5 <= len(everything) < 200
    assert await store.xrevrange("no-such-stream", 5) == []


async def test_subscribers_each_get_every_message(store: Store) -> None:
    async with store.subscribe("ch") as first, store.subscribe("ch") as second:
        for i in range(3):
            await store.publish("ch", f"m{i}".encode())
        for messages in (first, second):
            got = [await asyncio.wait_for(anext(messages), 5) for _ in range(3)]
            assert got == [b"m0", b"m1", b"m2"]
    await store.publish("ch", b"nobody listens")  # no error without subscribers


def test_open_store_picks_the_implementation() -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("embedded"), MemoryStore)
    redis_store = open_store("redis://:secret@127.0.0.1:1/0")
    assert isinstance(redis_store, RedisStore)
    assert "secret" not in redis_store.name
    sentinel = open_store("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/geogate?db=1")
    assert isinstance(sentinel, RedisStore) and "pw" not in sentinel.name


async def test_unreachable_redis_raises_store_unavailable_and_fails_fast(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    store = RedisStore(server.url, max_backoff_s=30)
    try:
        await store.set("k", b"v")
        server.kill()
        with pytest.raises(StoreUnavailable) as info:
            await store.get("k")
        assert info.value.status == 503
        # Within the backoff it does not even try: the error says so.
        with pytest.raises(StoreUnavailable, match="retrying in"):
            await store.mget(["k"])
    finally:
        await store.close()
        server.stop()


async def test_reconnects_after_a_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    store = RedisStore(server.url, max_backoff_s=0.2)
    try:
        await store.set("k", b"v")
        server.restart()  # empty again: nothing is persisted

        async def back() -> bool:
            try:
                await store.set("k2", b"after")
                return True
            except StoreUnavailable:
                return False

        await wait_until(back, 20, "the store to reconnect after a restart")
        assert await store.get("k2") == b"after"
        assert await store.get("k") is None
    finally:
        await store.close()
        server.stop()


async def test_compare_and_set_may_jump_the_counter_forward_never_back(store: Store) -> None:
    # The registry re-seeds an emptied store (a Redis restart without persistence) with
    # the newest snapshot a reader holds, keeping its epoch.
    assert await store.compare_and_set("reg", 0, b"restored", new_counter=7) == 7
    assert await store.counter("reg") == 7
    with pytest.raises(ValueError):
        await store.compare_and_set("reg", 7, b"backwards", new_counter=3)
    assert await store.compare_and_set("reg", 7, b"next") == 8


async def test_registry_and_cache_stores_are_separate_when_configured_so(tmp_path: Path) -> None:
    same = open_stores(None)
    assert isinstance(same.registry, MemoryStore) and same.cache is same.registry
    global_primary, regional = RedisServer(tmp_path), RedisServer(tmp_path)
    stores = open_stores(global_primary.url, regional.url)
    try:
        assert stores.cache is not stores.registry
        await stores.registry.set("r", b"registry")
        await stores.cache.set("c", b"cache")
        assert await stores.cache.get("r") is None and await stores.registry.get("c") is None
        shared_url = open_stores(global_primary.url)
        assert shared_url.cache is shared_url.registry
        await shared_url.close()
    finally:
        await stores.close()
        global_primary.stop()
        regional.stop()


async def test_a_sentinel_url_reaches_the_primary_it_names(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path)
    sentinel = RedisSentinel(tmp_path, primary)
    store = open_store(sentinel.url)
    try:
        await store.compare_and_set("reg", 0, b"via sentinel")
        direct = RedisStore(primary.url)
        assert await direct.get("reg") == b"via sentinel"  # it went to the primary Sentinel named
        await direct.close()
    finally:
        await store.close()
        sentinel.stop()
        primary.stop()


async def test_token_bucket_takes_what_is_there_and_refills_on_the_stores_clock(store: Store) -> None:
    # A bucket of 10 refilling 1,000 a second (1 per ms): a want beyond it gets what is there.
    first = await store.take("bucket", 1000, 10, 4, 1, ttl_s=60)
    assert (first.granted, first.left, first.wait_ms) == (4, 6, 0)
    assert 0 < first.full_ms <= 4
    rest = await store.take("bucket", 1000, 10, 100, 1, ttl_s=60)
    assert rest.granted >= 6 and rest.left == 0  # what was there, plus a refill of the elapsed ms
    refused = await store.take("slow", 1, 2, 2, 2, ttl_s=60)  # 1 a second, 2 at most
    assert refused.granted == 2
    refused = await store.take("slow", 1, 2, 1, 1, ttl_s=60)
    assert (refused.granted, refused.left) == (0, 0) and 0 < refused.wait_ms <= 1000
    # A bucket without refill (a daily quota) never refills: wait -1.
    quota = await store.take("quota", 0, 5, 5, 5, ttl_s=60)
    assert quota.granted == 5
    empty = await store.take("quota", 0, 5, 1, 1, ttl_s=60)
    assert (empty.granted, empty.wait_ms, empty.full_ms) == (0, -1, -1)
    # need > what is there: nothing is taken, even if want could be partly served
    partial = await store.take("p", 0, 3, 5, 4, ttl_s=60)
    assert (partial.granted, partial.left) == (0, 3)


async def test_concurrent_takes_never_hand_out_more_than_the_bucket(store: Store) -> None:
    results = await asyncio.gather(*(store.take("shared", 0, 50, 3, 1, ttl_s=60) for _ in range(40)))
    assert sum(r.granted for r in results) == 50
