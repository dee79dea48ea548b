"""The version registry and its watchers, on the embedded store and on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from helpers import RedisServer, wait_until

from geogate.shared.errors import Conflict, InvalidRequest, StoreUnavailable
from geogate.shared.registry import ColorInfo, Registry, RegistryRecord, RegistryWatcher
from geogate.shared.store import MemoryStore, RedisStore, Store

BLUE = ColorInfo("mgeo_demo_tiny-synth_v1-20261124T0144Z", "a" * 64)
GREEN = ColorInfo("mgeo_demo_tiny-synth_v2-20261124T0200Z", "b" * 64)
REGIONS = ["cn-east", "eu-central"]

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "redis"])
async def connect(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A factory of store clients on one backend: each gateway or admin gets its own."""
    opened: list[Store] = []
    server = RedisServer(tmp_path) if request.param == "redis" else None
    shared_memory = MemoryStore()

    def make() -> Store:
        store: Store = RedisStore(server.url, max_backoff_s=0.2) if server else shared_memory
        opened.append(store)
        return store

    make.server = server  # type: ignore[attr-defined]
    yield make
    for store in opened:
        await store.close()
    if server:
        server.stop()


async def initialized(make: StoreFactory) -> Registry:
    registry = Registry(make())
    await registry.initialize({"blue": BLUE, "green": GREEN}, "blue", REGIONS, who="test")
    return registry


async def test_initialize_once_then_changes_bump_the_epoch_and_are_audited(connect: StoreFactory) -> None:
    registry = await initialized(connect)
    again = await Registry(connect()).initialize({"blue": GREEN}, "blue", ["x"], who="late")
    assert again.epoch == 1 and again.colors["blue"] == BLUE  # the first initialization stands
    record = await registry.switch("green", who="alice", why="release 2")
    assert (record.epoch, record.active_color, record.updated_by, record.reason) == (2, "green", "alice", "release 2")
    assert record.active_version() == GREEN.model_version and record.preview_color == "blue"
    record = await registry.set_region_state("eu-central", "drained", who="bob", why="drill")
    record = await registry.set_canary(5, who="carol", why="try v3")
    assert (record.epoch, record.regions["eu-central"], record.region_state("cn-east")) == (4, "drained", "active")
    assert await Registry(connect()).read() == record

    entries = await registry.audit(10)
    assert [(e.epoch, e.action, e.who) for e in entries] == [
        (4, "canary", "carol"), (3, "region_drained", "bob"), (2, "switch", "alice"), (1, "initialize", "test"),
    ]
    switch = entries[2]
    assert switch.why == "release 2" and switch.before is not None
    assert (switch.before.active_color, switch.after.active_color) == ("blue", "green")
    assert entries[3].before is None
    assert switch.when.endswith("+00:00")


async def test_concurrent_writers_one_wins_the_loser_gets_conflict(connect: StoreFactory) -> None:
    await initialized(connect)
    writers = [Registry(connect()) for _ in range(8)]

    async def switch(registry: Registry, i: int) -> str:
        try:
            await registry.set_canary(i, who=f"op{i}", why="race", expected_epoch=1)
            return "won"
        except Conflict as exc:
            assert exc.status == 409 and exc.current is not None and exc.current >= 2
            return "conflict"

    results = await asyncio.gather(*(switch(r, i) for i, r in enumerate(writers)))
    assert results.count("won") == 1
    record = await writers[0].read()
    assert record.epoch == 2 and record.canary_percent == results.index("won")
    assert len(await writers[0].audit(50)) == 2  # losers leave no audit entry


async def test_invalid_changes_are_refused_and_change_nothing(connect: StoreFactory) -> None:
    registry = await initialized(connect)
    with pytest.raises(InvalidRequest, match="not registered"):
        await registry.switch("red", who="alice", why="typo")
    with pytest.raises(InvalidRequest):
        await registry.set_canary(150, who="alice", why="too much")
    with pytest.raises(InvalidRequest):
        await registry.set_region_state("cn-east", "sleeping", who="alice", why="no such state")
    with pytest.raises(InvalidRequest, match="who"):
        await registry.switch("green", who="alice", why="")
    with pytest.raises(Conflict):
        await registry.switch("green", who="alice", why="stale view", expected_epoch=0)
    assert (await registry.read()).epoch == 1


async def test_every_watcher_sees_each_change(connect: StoreFactory) -> None:
    registry = await initialized(connect)
    watchers = [RegistryWatcher(Registry(connect()), poll_interval_s=60) for _ in range(3)]
    seen: list[list[int]] = [[] for _ in watchers]
    for watcher, log in zip(watchers, seen):
        watcher.on_change(lambda record, log=log: log.append(record.epoch))
        await watcher.start()
    try:
        await wait_until(lambda: all(w.connected for w in watchers), 10, "watchers to subscribe")
        for percent in (1, 2, 3):
            await registry.set_canary(percent, who="op", why="steps")
        for watcher in watchers:
            record = await watcher.wait_for_epoch(4, timeout_s=10)
            assert record.canary_percent == 3
        assert all(log[-1] == 4 and log == sorted(set(log)) for log in seen), seen  # in order, no repeats
    finally:
        for watcher in watchers:
            await watcher.close()


async def test_stale_and_duplicate_records_are_ignored() -> None:
    watcher = RegistryWatcher(Registry(MemoryStore()))
    assert await watcher.apply(RegistryRecord(epoch=3, active_color="green"))
    assert not await watcher.apply(RegistryRecord(epoch=3, active_color="blue"))  # duplicate epoch
    assert not await watcher.apply(RegistryRecord(epoch=2, active_color="blue"))  # late message
    assert watcher.snapshot.active_color == "green"
    with pytest.raises(TimeoutError):
        await watcher.wait_for_epoch(4, timeout_s=0.05)


async def test_watcher_serves_its_snapshot_while_redis_is_down_and_converges_after(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    stores = [RedisStore(server.url, max_backoff_s=0.2) for _ in range(2)]
    admin = Registry(stores[0])
    watcher = RegistryWatcher(Registry(stores[1]), poll_interval_s=0.2, max_backoff_s=0.2)
    try:
        await admin.initialize({"blue": BLUE, "green": GREEN}, "blue", REGIONS, who="test")
        await admin.switch("green", who="alice", why="release")
        await watcher.start()
        await watcher.wait_for_epoch(2, timeout_s=10)

        server.kill()
        with pytest.raises(StoreUnavailable):  # an admin write fails clearly (the API maps it to 503)
            await admin.set_canary(10, who="alice", why="while down")
        await wait_until(lambda: not watcher.connected, 10, "the watcher to notice")
        assert watcher.snapshot.epoch == 2 and watcher.snapshot.active_color == "green"  # fail static

        server.start()  # back, but empty: nothing was persisted
        # The first write after the restart is healed onto the newest known record, not
        # onto an empty one: the epoch goes on from 2 and green stays active.
        record = await _retry_unavailable(lambda: admin.set_canary(10, who="alice", why="after restart"))
        assert (record.epoch, record.active_color, record.canary_percent) == (3, "green", 10)
        # The watcher missed the message while resubscribing, or got it: either way it converges.
        converged = await watcher.wait_for_epoch(3, timeout_s=15)
        assert converged.canary_percent == 10
    finally:
        await watcher.close()
        for store in stores:
            await store.close()
        server.stop()


async def test_a_reader_restores_an_emptied_store(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    store = RedisStore(server.url, max_backoff_s=0.2)
    registry = Registry(store)
    try:
        await registry.initialize({"blue": BLUE}, "blue", REGIONS, who="test")
        await registry.set_canary(7, who="op", why="before the crash")
        server.restart()
        record = await _retry_unavailable(registry.read)
        assert (record.epoch, record.canary_percent) == (2, 7)
        fresh = Registry(RedisStore(server.url))
        try:
            assert await fresh.read() == record  # written back, for every other reader too
        finally:
            await fresh.store.close()
    finally:
        await store.close()
        server.stop()


async def _retry_unavailable(call: Callable[[], object]) -> RegistryRecord:
    for _ in range(200):
        try:
            result = await call()  # type: ignore[misc]
            assert isinstance(result, RegistryRecord)
            return result
        except StoreUnavailable:
            await asyncio.sleep(0.05)
    raise AssertionError("the store did not come back")


def test_records_round_trip_as_json() -> None:
    record = RegistryRecord(epoch=5, active_color="green", colors={"blue": BLUE, "green": GREEN},
                            canary_percent=2.5, regions={"cn-east": "failed"})
    assert msgspec.json.decode(msgspec.json.encode(record), type=RegistryRecord) == record


async def test_a_watcher_closes_at_any_moment_after_it_starts(redis_server: RedisServer) -> None:
    """redis-py can swallow a cancellation that lands inside one of its calls
    (asyncio.wait_for on Python 3.11): a watcher closed right after it started then kept
    listening, and the gateway's shutdown waited for it forever. Closed at once, again
    and again, it must end every time."""
    store = RedisStore(redis_server.url, timeout_s=2.0)
    try:
        for attempt in range(40):
            watcher = RegistryWatcher(Registry(store))
            await watcher.start()
            for _ in range(attempt % 8):  # let the cancel land at different points of the subscription
                await asyncio.sleep(0)
            async with asyncio.timeout(10):
                await watcher.close()
    finally:
        await store.close()
