"""Dynamic batching: concurrent requests merged into one forward pass.

A batch is dispatched when it holds ``max_batch_size`` items or when its oldest item
has waited ``max_wait`` (Triton's queue-delay rule: under load the oldest item has
already waited while the device was busy, so the next batch leaves at once). Requests
larger than a batch are cut into chunks. Two batches may be in flight: one being
tokenized on the preparation thread while the other runs on the device thread, which
keeps the device busy while the next batch forms. Items whose deadline has passed, or
whose caller gave up, are dropped before they are computed.

When the queue is deeper than one batch and the batcher knows item lengths, it groups
similar lengths: the oldest entry always goes in the next batch (nobody starves), and
the rest of that batch is filled from the next few batches' worth of entries by
closeness in length, so a batch pads its short inputs to a long one less often.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from geogate.node.backends.base import TaskRunner
from geogate.shared.errors import DeadlineExceeded, ModelError, Overloaded, Unavailable

__all__ = ["BatchObserver", "Batcher"]

log = logging.getLogger("geogate.node.batcher")

I = TypeVar("I")
R = TypeVar("R")

PIPELINE_DEPTH = 2  # batches in flight: one preparing, one on the device
LENGTH_WINDOW = 4  # length grouping looks this many batches' worth of entries ahead


class BatchObserver:
    """What the batcher reports (metrics); the default observes nothing."""

    def batch_done(self, task: str, size: int, seconds: float) -> None: ...
    def dropped(self, task: str, reason: str, items: int) -> None: ...
    def queue_depth(self, task: str, items: int) -> None: ...
    def in_flight(self, task: str, items: int) -> None: ...


@dataclass(slots=True, eq=False)
class _Entry(Generic[I, R]):
    items: Sequence[I]
    future: asyncio.Future[Sequence[R]]
    deadline: float  # loop time
    enqueued: float = field(default=0.0)
    length: int = 0  # its longest item, when the batcher knows how to measure items


class Batcher(Generic[I, R]):
    def __init__(
        self,
        task: str,
        runner: TaskRunner[I, R],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        prepare_executor: Executor,
        device_executor: Executor,
        observer: BatchObserver | None = None,
        before_run: Callable[[], None] | None = None,
        length: Callable[[I], int] | None = None,
    ) -> None:
        self.task = task
        self._runner = runner
        self._max_batch = max_batch_size
        self._max_wait = max_wait_s
        self._max_queue = max_queue
        self._prepare_pool = prepare_executor
        self._device_pool = device_executor
        self._observer = observer or BatchObserver()
        self._before_run = before_run
        self._length = length
        self._queue: deque[_Entry[I, R]] = deque()
        self._queued_items = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(PIPELINE_DEPTH)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._in_flight_items = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        """Items accepted but not yet handed to the device."""
        return self._queued_items

    @property
    def batches_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def busy(self) -> bool:
        return self._queued_items > 0 or bool(self._in_flight)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name=f"batcher-{self.task}")

    async def submit(self, items: Sequence[I], deadline: float) -> list[R]:
        """Results for ``items`` in order; raises Overloaded, DeadlineExceeded, Unavailable."""
        if self._closed:
            raise Unavailable("the node is shutting down", retry_after_s=1)
        if self._queued_items + len(items) > self._max_queue:
            self._observer.dropped(self.task, "queue_full", len(items))
            raise Overloaded(f"{self.task} queue is full ({self._queued_items} items waiting)", retry_after_s=1)
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = []
        for start in range(0, len(items), self._max_batch):
            chunk = items[start : start + self._max_batch]
            longest = max(map(self._length, chunk)) if self._length is not None else 0
            entry: _Entry[I, R] = _Entry(chunk, loop.create_future(), deadline, now, longest)
            entries.append(entry)
            self._queue.append(entry)
        self._queued_items += len(items)
        self._observer.queue_depth(self.task, self._queued_items)
        self._wakeup.set()
        try:
            async with asyncio.timeout_at(deadline):
                chunks = await asyncio.gather(*(e.future for e in entries))
        except TimeoutError:
            raise DeadlineExceeded(f"deadline passed with {self.task} work still queued or running") from None
        finally:
            for e in entries:  # a caller that gave up frees its queued items
                if not e.future.done():
                    e.future.cancel()
        return [r for chunk in chunks for r in chunk]

    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting, finish what was accepted; False if the timeout cut it short."""
        self._closed = True
        try:
            async with asyncio.timeout(timeout_s):
                while self.busy:
                    self._wakeup.set()
                    await asyncio.sleep(0.01)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        while self._queue:
            entry = self._queue.popleft()
            if not entry.future.done():
                entry.future.set_exception(Unavailable("the node shut down before this was computed"))
        self._queued_items = 0

    # -- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                batch = await self._form_batch(loop)
            except BaseException:
                self._slots.release()
                raise
            self._count_in_flight(sum(len(e.items) for e in batch))
            task = asyncio.create_task(self._execute(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _form_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Entry[I, R]]:
        self._drop_dead(loop.time())
        if self._length is not None and self._queued_items > self._max_batch:
            return self._take_similar()
        batch: list[_Entry[I, R]] = []
        size = 0
        while size < self._max_batch:
            self._drop_dead(loop.time())
            if self._queue:
                if size + len(self._queue[0].items) > self._max_batch:
                    break
                entry = self._queue.popleft()
                self._take(entry)
                batch.append(entry)
                size += len(entry.items)
                continue
            timeout = None if not batch else batch[0].enqueued + self._max_wait - loop.time()
            if timeout is not None and timeout <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        return batch

    def _take_similar(self) -> list[_Entry[I, R]]:
        """The oldest entry plus the entries closest to it in length (queue is deep)."""
        head = self._queue[0]
        window = itertools.islice(self._queue, 1, self._max_batch * LENGTH_WINDOW)
        chosen, size = [head], len(head.items)
        for entry in sorted(window, key=lambda e: abs(e.length - head.length)):
            if size + len(entry.items) <= self._max_batch and not entry.future.done():
                chosen.append(entry)
                size += len(entry.items)
                if size == self._max_batch:
                    break
        taken = set(map(id, chosen))
        self._queue = deque(e for e in self._queue if id(e) not in taken)
        for entry in chosen:
            self._take(entry)
        return chosen

    def _take(self, entry: _Entry[I, R]) -> None:
        self._queued_items -= len(entry.items)
        self._observer.queue_depth(self.task, self._queued_items)

    def _drop_dead(self, now: float) -> None:
        """Drop queued entries at the head whose deadline passed or whose caller left."""
        while self._queue and self._reject_if_dead(self._queue[0], now):
            self._take(self._queue.popleft())

    def _reject_if_dead(self, entry: _Entry[I, R], now: float) -> bool:
        if entry.deadline <= now:
            if not entry.future.done():
                entry.future.set_exception(DeadlineExceeded("deadline passed before the batch ran"))
            self._observer.dropped(self.task, "deadline", len(entry.items))
            return True
        if entry.future.done():  # the caller went away (disconnect or cancellation)
            self._observer.dropped(self.task, "cancelled", len(entry.items))
            return True
        return False

    async def _execute(self, batch: list[_Entry[I, R]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            # A deadline may have passed, or a caller left, while the batch formed.
            now = loop.time()
            live = [entry for entry in batch if not self._reject_if_dead(entry, now)]
            if not live:
                return
            items = [item for entry in live for item in entry.items]
            try:
                prepared = await loop.run_in_executor(self._prepare_pool, self._runner.prepare, items)
                started = time.perf_counter()
                results = await loop.run_in_executor(self._device_pool, self._compute, prepared)
                elapsed = time.perf_counter() - started
            except Exception as exc:
                log.exception("%s batch of %d items failed", self.task, len(items))
                for entry in live:
                    if not entry.future.done():
                        entry.future.set_exception(ModelError(f"the model failed on this batch: {exc}"))
                return
            if len(results) != len(items):
                error = ModelError(f"the model returned {len(results)} results for {len(items)} items")
                for entry in live:
                    if not entry.future.done():
                        entry.future.set_exception(error)
                return
            self._observer.batch_done(self.task, len(items), elapsed)
            offset = 0
            for entry in live:
                n = len(entry.items)
                if not entry.future.done():
                    entry.future.set_result(results[offset : offset + n])
                offset += n
        finally:
            self._count_in_flight(-sum(len(e.items) for e in batch))
            self._slots.release()

    def _count_in_flight(self, delta: int) -> None:
        self._in_flight_items += delta
        self._observer.in_flight(self.task, self._in_flight_items)

    def _compute(self, prepared: object) -> Sequence[R]:
        if self._before_run is not None:
            self._before_run()
        return self._runner.run(prepared)
