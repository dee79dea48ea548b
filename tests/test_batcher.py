"""The dynamic batcher on its own, with a runner that records the batches it is given.

The runner is a real implementation of the backend seam (no model needed to test the
scheduling); a ``threading.Event`` lets a test hold the device thread exactly as long as
it needs, instead of relying on timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import wait_until

from geogate.node.batcher import Batcher, BatchObserver
from geogate.shared.errors import DeadlineExceeded, ModelError, Overloaded, Unavailable


class RecordingRunner:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = False

    def prepare(self, items: Sequence[int]) -> list[int]:
        return list(items)

    def run(self, prepared: list[int]) -> list[int]:
        self.entered.set()
        self.gate.wait(30)
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append(prepared)
        return [x * 10 for x in prepared]


class Counting(BatchObserver):
    def __init__(self) -> None:
        self.dropped_items: dict[str, int] = {}
        self.sizes: list[int] = []

    def batch_done(self, task: str, size: int, seconds: float) -> None:
        self.sizes.append(size)

    def dropped(self, task: str, reason: str, items: int) -> None:
        self.dropped_items[reason] = self.dropped_items.get(reason, 0) + items


@pytest.fixture
def pools() -> Iterator[tuple[ThreadPoolExecutor, ThreadPoolExecutor]]:
    prep, dev = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    yield prep, dev
    prep.shutdown(wait=False, cancel_futures=True)
    dev.shutdown(wait=False, cancel_futures=True)


def make(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor], runner: RecordingRunner, obs: Counting,
         *, max_batch_size: int = 8, max_wait_s: float = 0.05, max_queue: int = 100) -> Batcher[int, int]:
    b: Batcher[int, int] = Batcher(
        "t", runner, max_batch_size=max_batch_size, max_wait_s=max_wait_s, max_queue=max_queue,
        prepare_executor=pools[0], device_executor=pools[1], observer=obs,
    )
    b.start()
    return b


def far() -> float:
    return asyncio.get_running_loop().time() + 30


async def test_concurrent_requests_share_a_forward_pass(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor]) -> None:
    runner, obs = RecordingRunner(), Counting()
    runner.gate.clear()
    b = make(pools, runner, obs, max_batch_size=16, max_wait_s=0.01)
    # The first call occupies the device; the next five queue up meanwhile and must
    # leave together in one batch once the device is free.
    first = asyncio.create_task(b.submit([0], far()))
    await wait_until(lambda: runner.entered.is_set(), 10, "first batch on the device")
    rest = [asyncio.create_task(b.submit([i, i + 100], far())) for i in range(1, 6)]
    await wait_until(lambda: b.queue_depth == 0 and b.batches_in_flight == 2, 10, "second batch formed")
    runner.gate.set()
    assert await first == [0]
    results = await asyncio.gather(*rest)
    assert results == [[i * 10, (i + 100) * 10] for i in range(1, 6)]
    assert sorted(len(batch) for batch in runner.batches) == [1, 10]
    await b.close()


async def test_large_request_is_cut_into_batches_and_reassembled(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor]) -> None:
    runner, obs = RecordingRunner(), Counting()
    b = make(pools, runner, obs, max_batch_size=4, max_wait_s=0)
    out = await b.submit(list(range(10)), far())
    assert out == [x * 10 for x in range(10)]
    assert all(len(batch) <= 4 for batch in runner.batches)
    assert sum(len(batch) for batch in runner.batches) == 10
    await b.close()


async def test_queue_full_is_overloaded(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor]) -> None:
    runner, obs = RecordingRunner(), Counting()
    runner.gate.clear()
    b = make(pools, runner, obs, max_batch_size=2, max_wait_s=0, max_queue=4)
    held = asyncio.create_task(b.submit([1, 2], far()))
    await wait_until(lambda: runner.entered.is_set(), 10, "device busy")
    # The pipeline takes a second batch for preparation; then the queue itself fills.
    queued = [asyncio.create_task(b.submit([3, 4], far()))]
    await wait_until(lambda: b.batches_in_flight == 2, 10, "second batch taken")
    queued += [asyncio.create_task(b.submit([5, 6], far())), asyncio.create_task(b.submit([7, 8], far()))]
    await wait_until(lambda: b.queue_depth == 4, 10, "queue full")
    with pytest.raises(Overloaded) as info:
        await b.submit([9], far())
    assert info.value.headers() == {"Retry-After": "1"}
    assert obs.dropped_items == {"queue_full": 1}
    runner.gate.set()
    assert await held == [10, 20]
    assert [await q for q in queued] == [[30, 40], [50, 60], [70, 80]]
    await b.close()


async def test_expired_items_are_dropped_before_compute(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor]) -> None:
    runner, obs = RecordingRunner(), Counting()
    runner.gate.clear()
    b = make(pools, runner, obs, max_batch_size=1, max_wait_s=0)
    loop = asyncio.get_running_loop()
    held = asyncio.create_task(b.submit([1], far()))
    await wait_until(lambda: runner.entered.is_set(), 10, "device busy")
    filler = asyncio.create_task(b.submit([2], far()))  # taken into the pipeline's second slot
    await wait_until(lambda: b.batches_in_flight == 2, 10, "second slot taken")
    with pytest.raises(DeadlineExceeded):
        await b.submit([3], loop.time() + 0.05)
    runner.gate.set()
    assert await held == [10] and await filler == [20]
    await b.submit([4], far())
    computed = [x for batch in runner.batches for x in batch]
    assert 3 not in computed and computed == [1, 2, 4]
    assert obs.dropped_items.get("deadline", 0) + obs.dropped_items.get("cancelled", 0) == 1
    await b.close()


async def test_model_failure_fails_only_that_batch(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor]) -> None:
    runner, obs = RecordingRunner(), Counting()
    b = make(pools, runner, obs, max_wait_s=0)
    runner.fail = True
    with pytest.raises(ModelError):
        await b.submit([1], far())
    runner.fail = False
    assert await b.submit([2], far()) == [20]
    await b.close()


async def test_drain_finishes_accepted_work_and_refuses_new(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor]) -> None:
    runner, obs = RecordingRunner(), Counting()
    runner.gate.clear()
    b = make(pools, runner, obs, max_batch_size=2, max_wait_s=0)
    accepted = [asyncio.create_task(b.submit([i], far())) for i in range(5)]
    await wait_until(lambda: runner.entered.is_set(), 10, "device busy")
    drain = asyncio.create_task(b.drain(30))
    await wait_until(lambda: b._closed, 10, "drain started")
    with pytest.raises(Unavailable):
        await b.submit([99], far())
    runner.gate.set()
    assert await drain is True
    assert [await a for a in accepted] == [[i * 10] for i in range(5)]
    await b.close()


async def _interleaved_run(pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor], grouped: bool) -> list[list[int]]:
    """Short (1..8) and long (100..107) inputs arrive interleaved while the device is busy."""
    runner, obs = RecordingRunner(), Counting()
    runner.gate.clear()
    b: Batcher[int, int] = Batcher(
        "t", runner, max_batch_size=4, max_wait_s=0.01, max_queue=100, prepare_executor=pools[0],
        device_executor=pools[1], observer=obs, length=(lambda x: x) if grouped else None,
    )
    b.start()
    try:
        blocker = asyncio.create_task(b.submit([0], far()))
        await wait_until(runner.entered.is_set, 5, "the device to be busy")
        values = [v for i in range(8) for v in (1 + i, 100 + i)]
        calls = [asyncio.create_task(b.submit([v], far())) for v in values]
        await wait_until(lambda: b.queue_depth >= 12, 5, "the queue to fill")
        runner.gate.set()
        results = await asyncio.gather(blocker, *calls)
        assert [r[0] for r in results[1:]] == [v * 10 for v in values]  # every caller got its own answer
        return [batch for batch in runner.batches if 0 not in batch]
    finally:
        await b.close()


async def test_a_deep_queue_is_batched_by_length_and_the_oldest_goes_first(
    pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
) -> None:
    def homogeneous(batches: list[list[int]]) -> int:
        return sum(1 for batch in batches if len(batch) == 4 and max(batch) - min(batch) < 50)

    grouped = await _interleaved_run(pools, grouped=True)
    fifo = await _interleaved_run(pools, grouped=False)
    assert homogeneous(fifo) == 0, fifo  # arrival order mixes them
    assert homogeneous(grouped) >= 2, grouped  # shorts with shorts, longs with longs
    # The oldest waiting input is never passed over: the first queued item (1) leaves in
    # the first batch formed, and every batch holds the oldest item still waiting then.
    assert 1 in grouped[0]
    waiting = [v for i in range(8) for v in (1 + i, 100 + i)]
    for batch in grouped:
        assert waiting[0] in batch, (batch, waiting)
        waiting = [v for v in waiting if v not in batch]
