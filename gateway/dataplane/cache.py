"""The versioned result cache: per item, one MGET per batch, coalesced in-flight misses.

A key is namespace + task + model version + a hash of the input, so a result of one
version is never served for another (a switch needs no flush). Similarity inputs are
normalized first (NFKC, whitespace folded): ``浙江省 杭州市`` and ``浙江省　杭州市`` share a
result. Parse inputs are hashed as given, because the elements' offsets point into the
caller's own text.

Values are msgpack (compact, fast); values over ``max_value_bytes`` are not cached. The
cache never fails a request: a store that is down makes every lookup a miss and every
write a no-op (counted in ``stats``).

In front of the shared store sits a small in-process LRU (``local_items``): a result of
one version for one input never changes, so it cannot go stale, and a hot item then
costs no Redis round trip at all (the hit path stays faster than a plain proxy).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec

from geogate.shared.errors import StoreUnavailable, Unavailable
from geogate.shared.schemas import ParseResult, SimilarityResult
from geogate.shared.store import Store

__all__ = ["CacheStats", "Lookup", "ResultCache", "normalize"]

log = logging.getLogger("geogate.gateway.cache")

I = TypeVar("I", bound=Hashable)
R = TypeVar("R")

_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC (full-width digits and letters become ASCII), whitespace runs folded to one space."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    coalesced: int = 0  # misses that waited for an identical miss already on its way
    store_errors: int = 0
    too_large: int = 0


@dataclass(frozen=True)
class Lookup(Generic[R]):
    results: list[R]
    hits: int

    @property
    def status(self) -> str:
        """For the ``X-Cache`` header: hit, miss or partial."""
        if self.hits == len(self.results):
            return "hit"
        return "miss" if self.hits == 0 else "partial"


@dataclass
class ResultCache(Generic[I, R]):
    """The cache of one task's results; ``for_similarity`` and ``for_parse`` build them."""

    store: Store
    task: str
    result_type: type[R]
    key_text: Callable[[I], str]
    namespace: str = "geogate"
    ttl_s: float = 24 * 3600.0
    max_value_bytes: int = 16_384
    local_items: int = 10_000  # in-process LRU entries (0: none)
    stats: CacheStats = field(default_factory=CacheStats)
    _inflight: dict[str, asyncio.Future[R]] = field(default_factory=dict)
    _local: OrderedDict[str, R] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(self.result_type).decode

    @classmethod
    def for_similarity(cls, store: Store, **options: object) -> ResultCache[tuple[str, str], SimilarityResult]:
        # \x1f (unit separator) cannot be confused with text; the order of the pair counts.
        return ResultCache(store, "similarity", SimilarityResult, lambda p: normalize(p[0]) + "\x1f" + normalize(p[1]),
                           **options)  # type: ignore[arg-type]

    @classmethod
    def for_parse(cls, store: Store, **options: object) -> ResultCache[str, ParseResult]:
        return ResultCache(store, "parse", ParseResult, lambda text: text, **options)  # type: ignore[arg-type]

    def key(self, model_version: str, item: I) -> str:
        digest = hashlib.blake2b(self.key_text(item).encode(), digest_size=16).hexdigest()
        return f"{self.namespace}:cache:{self.task}:{model_version}:{digest}"

    def _remember(self, key: str, result: R) -> None:
        if self.local_items:
            self._local[key] = result
            self._local.move_to_end(key)
            if len(self._local) > self.local_items:
                self._local.popitem(last=False)

    async def get_many(self, model_version: str, items: Sequence[I]) -> list[R | None]:
        """Cached results in order (None for a miss)."""
        return await self._get([self.key(model_version, item) for item in items])

    async def put_many(self, model_version: str, items: Sequence[I], results: Sequence[R]) -> None:
        """Store results (pipelined SETs with the TTL); oversized values are skipped."""
        await self._put([self.key(model_version, item) for item in items], results)

    async def _get(self, keys: Sequence[str]) -> list[R | None]:
        """The local LRU first, then one MGET for whatever it did not hold."""
        out: list[R | None] = []
        remote: list[int] = []
        for index, key in enumerate(keys):
            found = self._local.get(key)
            if found is not None:
                self._local.move_to_end(key)
            else:
                remote.append(index)
            out.append(found)
        if not remote:
            return out
        try:
            raw = await self.store.mget([keys[i] for i in remote])
        except StoreUnavailable as exc:
            self.stats.store_errors += 1
            log.debug("cache lookup skipped: %s", exc)
            return out
        for index, value in zip(remote, raw):
            if value is None:
                continue
            try:
                out[index] = result = self._decode(value)
            except msgspec.DecodeError:  # written by another version of this code: a miss
                continue
            self._remember(keys[index], result)
        return out

    async def _put(self, keys: Sequence[str], results: Sequence[R]) -> None:
        entries = []
        for key, result in zip(keys, results):
            value = self._encode(result)
            if len(value) > self.max_value_bytes:
                self.stats.too_large += 1
                continue
            entries.append((key, value))
            self._remember(key, result)
        try:
            await self.store.set_many(entries, ttl_s=self.ttl_s)
        except StoreUnavailable as exc:
            self.stats.store_errors += 1
            log.debug("cache write skipped: %s", exc)

    async def lookup(
        self, model_version: str, items: Sequence[I], compute: Callable[[list[I]], Awaitable[Sequence[R]]],
        charge: Callable[[int], Awaitable[None] | None] | None = None,
    ) -> Lookup[R]:
        """Results for ``items``: hits from the store; misses computed once by ``compute``
        (which gets only the misses, each distinct input once), then cached. A miss that
        another call is already computing waits for that call instead.

        ``charge(misses)`` runs once the hits are known and before this call computes or
        waits for anything (what it returns, if anything, is awaited): an error it raises (a client's limit) is this call's alone,
        whereas one raised by ``compute`` reaches the calls waiting on it too."""
        keys = [self.key(model_version, item) for item in items]
        cached = await self._get(keys)
        hits = sum(r is not None for r in cached)
        self.stats.hits += hits
        self.stats.misses += len(items) - hits
        if charge is not None and (pending := charge(len(items) - hits)) is not None:
            await pending
        if hits == len(items):  # the hot path: nothing to compute or wait for
            return Lookup(cached, hits)  # type: ignore[arg-type]
        results: list[R | None] = list(cached)

        mine: dict[str, I] = {}  # keys this call computes, first item of each
        waiting: dict[int, asyncio.Future[R]] = {}
        loop = asyncio.get_running_loop()
        for index, (key, item, result) in enumerate(zip(keys, items, cached)):
            if result is not None:
                continue
            if key in mine:
                waiting[index] = self._inflight[key]
            elif key in self._inflight:
                self.stats.coalesced += 1
                waiting[index] = self._inflight[key]
            else:
                mine[key] = item
                self._inflight[key] = waiting[index] = loop.create_future()

        if mine:
            await self._compute(mine, compute)
        for index, future in waiting.items():
            results[index] = await asyncio.shield(future)
        return Lookup([r for r in results if r is not None], hits)

    async def _compute(self, mine: dict[str, I], compute: Callable[[list[I]], Awaitable[Sequence[R]]]) -> None:
        keys, inputs = list(mine), list(mine.values())
        try:
            computed = await compute(inputs)
            if len(computed) != len(inputs):
                raise RuntimeError(f"compute returned {len(computed)} results for {len(inputs)} inputs")
        except BaseException as exc:
            # Waiters from other calls get the error too; a cancellation of this call is
            # not theirs, so they get a retryable 503 instead.
            error = exc if isinstance(exc, Exception) else Unavailable("the identical call this waited for was cancelled")
            for key in keys:
                future = self._inflight.pop(key)
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # marks it retrieved: there may be no waiter
            raise
        for key, result in zip(keys, computed):
            future = self._inflight.pop(key)
            if not future.done():
                future.set_result(result)
        await self._put(keys, computed)
